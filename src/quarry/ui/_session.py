"""Signing in: the login page takes an API token (``quarry tokens create``) and keeps it in
an HttpOnly, SameSite=Strict cookie, so the pages' script never sees it and no other site's
page can send it. A form that changes something (cancel, submit, sign out) is also refused
when its ``Origin`` is not this server.

A token is looked up in the job database like the APIs' (a job's own token opens no page),
trusted for a few seconds by ``TokenCache``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlencode, urlsplit

from fastapi import Depends, HTTPException, Request

from quarry.jobs import JobStore
from quarry.jobs._tokens import TokenCache

__all__ = ["COOKIE", "LoginNeeded", "Viewer", "ViewerDep", "check_origin", "safe_next"]

COOKIE = "quarry_session"
TOKEN_TTL = 5.0  # seconds a token is trusted before the database is asked again


@dataclass(frozen=True)
class Viewer:
    """Who is signed in: the token's user and their projects."""

    user: str
    projects: frozenset[str]


class LoginNeeded(Exception):
    """No valid session: the page redirects to the login page, and back after it."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a path on this server only (no open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def login_url(next_path: str) -> str:
    return "/login?" + urlencode({"next": safe_next(next_path)})


def tokens(request: Request) -> TokenCache[Viewer]:
    cache: TokenCache[Viewer] | None = getattr(request.app.state, "ui_tokens", None)
    if cache is None:
        store: JobStore = request.app.state.store

        def lookup(token: str) -> Viewer | None:
            found = store.authenticate(token)
            return Viewer(found[0], frozenset(found[1])) if found is not None else None

        cache = TokenCache(lookup, TOKEN_TTL)
        request.app.state.ui_tokens = cache
    return cache


async def _viewer(request: Request) -> Viewer:
    token = request.cookies.get(COOKIE, "")
    viewer = await tokens(request).caller(token) if token else None
    if viewer is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginNeeded(target)
    return viewer


ViewerDep = Annotated[Viewer, Depends(_viewer)]


def check_origin(request: Request) -> None:
    """403 for a form posted from another site's page (the cookie is SameSite=Strict too)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        referer = request.headers.get("referer")
        origin = f"{urlsplit(referer).scheme}://{urlsplit(referer).netloc}" if referer else None
    host = request.headers.get("host", "")
    if origin is None or urlsplit(origin).netloc != host:
        raise HTTPException(403, "this form may be sent only from this server's own pages")
