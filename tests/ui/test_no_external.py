"""Nothing a Quarry server serves may point outside it: no page, fragment, stylesheet, script
or report names an address of another host (a CDN, a font service, a tracker), and a
browser showing the pages asks no other address for anything.

Two looks at the same pages of a running ``quarry server start`` (tests/ui/conftest.py),
signed in: a crawl with plain HTTP, breadth first from ``/`` and the pages known to exist,
reading every ``src``, ``href``, ``action``, ``srcset``, CSS ``url(...)`` and ``@import``,
``<meta http-equiv=refresh>`` and the headers that carry an address; then headless chromium
on one page of each kind, recording every request the page and its frames make.
"""

from __future__ import annotations

import re
import sys
from collections import deque
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urldefrag, urljoin, urlsplit

import httpx2
import pytest

from tests.ui.conftest import DATASET, MODEL, Dashboard, sign_in

MAX_PAGES = 400  # a cap on the crawl: the pages of a small server are far fewer
# attributes whose value the browser loads, follows or posts to
URL_ATTRIBUTES = frozenset({
    "src", "href", "action", "formaction", "data", "poster", "background", "cite", "ping",
    "longdesc", "manifest", "codebase", "archive", "icon", "lowsrc", "dynsrc", "profile",
    "usemap", "xlink:href", "itemtype",
})  # fmt: skip
SRCSET_ATTRIBUTES = frozenset({"srcset", "imagesrcset"})
# the namespaces SVG and XHTML declare: names, never fetched
NAMESPACES = frozenset({
    "http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink", "http://www.w3.org/1999/xhtml",
    "http://www.w3.org/XML/1998/namespace",
})  # fmt: skip
CSS_URL = re.compile(r"""url\(\s*(?:"([^"]*)"|'([^']*)'|([^)'"\s]*))\s*\)""", re.IGNORECASE)
CSS_IMPORT = re.compile(r"""@import\s+(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)
SCRIPT_URL = re.compile(r"""["'`]((?:https?:|wss?:)?//[^"'`\s]+)""", re.IGNORECASE)
# a CSP source that names no host: a keyword, a nonce or hash, data: or blob:
CSP_WORD = re.compile(r"^'[a-z-]+'$|^'(nonce|sha256|sha384|sha512)-.*'$|^(data|blob):$")
CSP_FLAGS = frozenset({"sandbox", "upgrade-insecure-requests", "block-all-mixed-content",
                       "require-trusted-types-for", "trusted-types"})  # fmt: skip
SCANNED = ("text/html", "text/css", "javascript", "image/svg+xml")


def outside(address: str, base: str, server: str) -> bool:
    """Whether ``address``, read on the page at ``base``, is on another host than
    ``server`` (host:port). Relative addresses, ``data:`` and the like stay here."""
    # a browser reads a backslash as a slash in http(s) addresses: "/\\evil" is "//evil"
    resolved = urljoin(base, address.strip().replace("\\", "/"))
    parts = urlsplit(resolved)
    if parts.scheme in ("data", "blob", "about", "mailto", "javascript"):
        return False
    return parts.netloc.lower() != server or parts.scheme not in ("http", "https", "ws", "wss")


def css_addresses(text: str) -> list[str]:
    found = [next(g for g in m.groups() if g is not None) for m in CSS_URL.finditer(text)]
    return found + [m.group(1) or m.group(2) for m in CSS_IMPORT.finditer(text)]


class Page(HTMLParser):
    """An HTML page's addresses: every one it names (``addresses``, with where), and the
    ones to crawl further (``links``)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.addresses: list[tuple[str, str]] = []
        self.links: list[str] = []
        self._in = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        self._in = tag
        for name, value in values.items():
            where = f"<{tag} {name}>"
            if name == "xmlns" or name.startswith("xmlns:"):
                if value not in NAMESPACES:
                    self.addresses.append((where, value))
            elif name in URL_ATTRIBUTES:
                self.addresses.append((where, value))
            elif name in SRCSET_ATTRIBUTES:
                for candidate in value.split(","):
                    if candidate.strip():
                        self.addresses.append((where, candidate.split()[0]))
            elif name == "style":
                self.addresses += [(f"<{tag} style> url()", a) for a in css_addresses(value)]
            elif name in ("data-refresh", "data-load", "data-log"):  # what the script fetches
                self.addresses.append((where, value))
                self.links.append(value)
        if tag == "meta" and values.get("http-equiv", "").lower() == "refresh":
            target = re.search(r"url\s*=\s*['\"]?([^'\"]+)", values.get("content", ""), re.I)
            if target:
                self.addresses.append(("<meta http-equiv=refresh>", target.group(1)))
                self.links.append(target.group(1))
        for name in ("href", "src"):
            if name in values and tag in ("a", "link", "script", "img", "iframe", "frame"):
                self.links.append(values[name])
        if tag == "form" and values.get("method", "get").lower() == "get":
            self.links.append(values.get("action", ""))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        self._in = ""

    def handle_endtag(self, tag: str) -> None:
        self._in = ""

    def handle_data(self, data: str) -> None:
        if self._in == "style":
            self.addresses += [("<style>", a) for a in css_addresses(data)]


def addresses(body: str, content_type: str) -> tuple[list[tuple[str, str]], list[str]]:
    """The addresses a served file names (where, address), and the links to follow."""
    if "text/css" in content_type:
        return [("stylesheet", a) for a in css_addresses(body)], []
    if "javascript" in content_type:
        return [("script", m.group(1)) for m in SCRIPT_URL.finditer(body)], []
    page = Page()
    page.feed(body)
    page.close()
    return page.addresses, page.links


def header_addresses(response: httpx2.Response, base: str, server: str) -> list[tuple[str, str]]:
    """Addresses in the headers of the answer for ``base`` that lead elsewhere: a redirect,
    a refresh, a link; and any CSP source but a keyword or this server (a host, ``https:``
    or ``*`` lets a page load from another address)."""
    found = []
    if "location" in response.headers:
        found.append(("Location header", response.headers["location"]))
    if "refresh" in response.headers:
        target = re.search(r"url\s*=\s*(\S+)", response.headers["refresh"], re.I)
        found.append(("Refresh header", target.group(1) if target else ""))
    for link in re.findall(r"<([^>]*)>", response.headers.get("link", "")):
        found.append(("Link header", link))
    found = [(where, a) for where, a in found if outside(a, base, server)]
    for directive in response.headers.get("content-security-policy", "").split(";"):
        name, *sources = directive.split() or [""]
        if name.lower() in CSP_FLAGS:
            continue
        for source in sources:
            here = source.rstrip("/").lower() in (f"http://{server}", f"https://{server}")
            if not (CSP_WORD.match(source) or here):
                found.append((f"CSP {name}", source))
    return found


def sign_in_http(dashboard: Dashboard) -> httpx2.Client:
    client = httpx2.Client(base_url=dashboard.url, timeout=60, follow_redirects=False)
    answer = client.post("/login", data={"token": dashboard.token, "next": "/"},
                         headers={"Origin": dashboard.url})  # fmt: skip
    assert answer.status_code == 303 and "quarry_session" in client.cookies, answer.text
    return client


def known_pages(dashboard: Dashboard) -> list[str]:
    """Pages that exist whether or not a link leads to them: a job and its fragments, a run,
    two compared, the model, the dataset and its fragments, the API's docs, errors."""
    first, second = dashboard.two_runs()
    job = dashboard.jobs[0]
    return [
        "/", "/login", "/login?next=/runs", "/jobs", "/jobs/new", "/jobs/rows",
        f"/jobs/{job}", f"/jobs/{job}/summary", f"/jobs/{job}/log",
        "/runs", f"/runs/{first.run_id}", f"/runs/{first.run_id}/report",
        f"/runs/compare?run={first.run_id}&run={second.run_id}",
        "/models", f"/models/{MODEL}", "/datasets", f"/datasets/{DATASET}",
        f"/datasets/{DATASET}/coverage", f"/datasets/{DATASET}/health", "/streams",
        "/docs", "/redoc", "/docs/oauth2-redirect", "/openapi.json",
        "/static/quarry.css", "/static/quarry.js", "/static/favicon.svg",
        "/jobs/999999999", "/runs/compare", "/models/no-such-model", "/no/such/page",
    ]  # fmt: skip


@dataclass
class Crawl:
    pages: dict[str, tuple[int, str]] = field(default_factory=dict)  # url -> status, type
    problems: list[str] = field(default_factory=list)


def crawl(dashboard: Dashboard, start: list[str]) -> Crawl:
    """Every page reachable from ``start`` by same-origin links, breadth first; each one's
    outside addresses in ``problems``."""
    server = urlsplit(dashboard.url).netloc
    client = sign_in_http(dashboard)
    queue = deque(urljoin(dashboard.url, s) for s in start)
    seen = set(queue)
    result = Crawl()
    while queue:
        url = queue.popleft()
        assert len(result.pages) < MAX_PAGES, f"more than {MAX_PAGES} pages: {sorted(seen)}"
        response = client.get(url)
        kind = response.headers.get("content-type", "")
        result.pages[url] = (response.status_code, kind)
        result.problems += [f"{url}: {where} -> {a}" for where, a in
                            header_addresses(response, url, server)]  # fmt: skip
        found = []
        links = [response.headers["location"]] if "location" in response.headers else []
        if any(t in kind for t in SCANNED):
            named, more = addresses(response.text, kind)
            found += named
            links += more
        result.problems += [f"{url}: {where} -> {a}" for where, a in found
                            if outside(a, url, server)]  # fmt: skip
        for link in links:
            target = urldefrag(urljoin(url, link.strip()))[0]
            if not outside(target, url, server) and target.startswith(dashboard.url) and (
                target not in seen and not target.endswith("/logout")):  # fmt: skip
                seen.add(target)
                queue.append(target)
    client.close()
    return result


def shape(url: str) -> str:
    """A page's kind: its path with ids and numbers as placeholders, its query's names."""
    parts = urlsplit(url)
    path = re.sub(r"/(\d+|[0-9a-f]{32})(?=/|$)", "/ID", parts.path)
    names = sorted({q.split("=")[0] for q in parts.query.split("&") if q})
    return path + ("?" + "&".join(names) if names else "")


# -- the tests -------------------------------------------------------------------------------


def test_the_scanner_finds_every_kind_of_outside_address() -> None:
    """The checks below would fail on FastAPI's Swagger UI (its script and styles from a
    CDN) and on each way a page can name another host; the SVG namespace is no address."""
    from fastapi.openapi.docs import get_swagger_ui_html

    server, base = "127.0.0.1:8000", "http://127.0.0.1:8000/page"
    swagger = get_swagger_ui_html(openapi_url="/openapi.json", title="docs").body.decode()
    named, _ = addresses(swagger, "text/html")
    assert any(outside(a, base, server) and "cdn.jsdelivr.net" in a for _, a in named), named
    page = """<html><head><link rel="stylesheet" href="//fonts.example.com/a.css">
    <meta http-equiv="Refresh" content="0; url=https://example.org/">
    <style>@import "https://x.example/b.css"; body { background: url('//img.example/c.png') }
    </style></head><body>
    <img srcset="/here.png 1x, https://img.example/d.png 2x" src="data:image/png;base64,AA">
    <form action="http://localhost:8000/login"></form><div style="background:url(/ok.png)">
    <svg xmlns="http://www.w3.org/2000/svg"><a href="http://127.0.0.1:8000/runs">x</a></svg>
    <a href="/\\evil.example/">y</a><a href="wss://stream.example/">z</a>
    <div data-load="/datasets/x/health"></div></body></html>"""
    named, links = addresses(page, "text/html")
    assert sorted(a for _, a in named if outside(a, base, server)) == sorted([
        "//fonts.example.com/a.css", "https://example.org/", "https://x.example/b.css",
        "//img.example/c.png", "https://img.example/d.png", "http://localhost:8000/login",
        "/\\evil.example/", "wss://stream.example/",
    ])  # fmt: skip
    assert "/datasets/x/health" in links and "http://127.0.0.1:8000/runs" in links
    css = "a { background: url(https://cdn.example/e.png) } @import url(/ok.css);"
    assert [a for _, a in addresses(css, "text/css")[0] if outside(a, base, server)] == [
        "https://cdn.example/e.png"
    ]
    script = 'fetch("https://api.example/x"); const here = "/runs"; // a comment'
    assert [a for _, a in addresses(script, "text/javascript")[0]] == ["https://api.example/x"]
    policy = ("sandbox allow-scripts; default-src 'self' https://cdn.example; img-src 'self' "
              f"data: http://{server}; font-src fonts.example; script-src 'nonce-x' https:; "
              "frame-src *")  # fmt: skip
    answer = httpx2.Response(303, headers={"content-security-policy": policy,
                                           "location": "https://example.org/next"})  # fmt: skip
    assert header_addresses(answer, base, server) == [
        ("Location header", "https://example.org/next"), ("CSP default-src", "https://cdn.example"),
        ("CSP font-src", "fonts.example"), ("CSP script-src", "https:"), ("CSP frame-src", "*"),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def crawled(dashboard: Dashboard) -> Crawl:
    return crawl(dashboard, known_pages(dashboard))


@pytest.mark.slow
@pytest.mark.service
def test_no_served_page_names_an_address_outside_the_server(
    dashboard: Dashboard, crawled: Crawl
) -> None:
    result = crawled
    kinds = {shape(u) for u in result.pages}
    print(f"crawled {len(result.pages)} pages of {len(kinds)} kinds", file=sys.stderr)
    # the crawl saw every part of the dashboard (nothing passes by reading nothing)
    for kind in ("/", "/jobs/ID", "/jobs/ID/log", "/runs/ID", "/runs/ID/report",
                 "/runs/compare?run", "/models/ui-small", "/datasets/ui_market/coverage",
                 "/datasets/ui_market/health", "/static/quarry.js", "/static/quarry.css",
                 "/docs", "/jobs?status"):  # fmt: skip
        assert kind in kinds, sorted(kinds)
    html = [u for u, (status, kind) in result.pages.items() if "text/html" in kind]
    assert len(html) >= 20, html
    broken = {u: s for u, (s, _) in result.pages.items() if s >= 500}
    assert broken == {}, broken
    assert result.problems == [], "\n".join(result.problems)
    # the API's own pages, which /openapi.json lists, were among those crawled
    paths = httpx2.get(f"{dashboard.url}/openapi.json", timeout=30).json()["paths"]
    for path, item in paths.items():
        answers = item.get("get", {}).get("responses", {}).values()
        if "{" not in path and any("text/html" in a.get("content", {}) for a in answers):
            assert f"{dashboard.url}{path}" in result.pages, path


@pytest.mark.slow
@pytest.mark.service
@pytest.mark.usefixtures("browser_path")
def test_the_pages_ask_no_other_address_in_a_browser(
    dashboard: Dashboard, crawled: Crawl, chromium: Any
) -> None:
    from playwright.sync_api import expect

    server = urlsplit(dashboard.url).netloc
    one_of_each: dict[str, str] = {}
    for url, (_, kind) in crawled.pages.items():
        # a report alone is skipped: the run page frames it, and its requests are the page's
        if "text/html" in kind and not url.endswith("/report"):
            one_of_each.setdefault(shape(url), url)
    context = sign_in(chromium, dashboard)
    page = context.new_page()
    asked: dict[str, list[str]] = {}
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))  # the page's and its frames'
    page.on("websocket", lambda ws: requests.append(ws.url))
    for url in one_of_each.values():
        requests.clear()
        page.goto(url)  # "load": the page, its stylesheet, script, images and frames
        # what its script fetches at once: the fragments after the page, the log (all of a
        # finished job's, or the first read of a running one's); locators, not a predicate
        # (a predicate is evaluated as a string, which the pages' CSP forbids)
        expect(page.locator("[data-load]:not([data-loaded=true])")).to_have_count(0)
        expect(page.locator("[data-log]:not([data-done=true]):not([data-status=running])"
                            ":not([data-status=queued])")).to_have_count(0)  # fmt: skip
        asked[url] = list(requests)
    context.close()
    print(f"{len(asked)} pages in chromium", file=sys.stderr)
    elsewhere = [f"{where}: {r}" for where, rs in asked.items() for r in rs
                 if not r.startswith("data:") and outside(r, where, server)]  # fmt: skip
    assert elsewhere == [], "\n".join(elsewhere)
    everything = {r for rs in asked.values() for r in rs}
    # the pages did load what they are made of, their fragments and the reports' frames
    for path in ("/static/quarry.js", "/static/quarry.css", "/static/favicon.svg",
                 f"/datasets/{DATASET}/health", f"/datasets/{DATASET}/coverage"):  # fmt: skip
        assert f"{dashboard.url}{path}" in everything, path
    assert any(r.endswith("/report") for r in everything)
