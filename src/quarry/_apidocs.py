"""Every API's ``/docs``: a reference page rendered on the server from the app's OpenAPI
document, in place of FastAPI's Swagger UI, which loads its script and styles from a CDN
(nothing of a Quarry server may ask another address, and its pages run no inline script).

The page lists each operation by tag: method, path, summary, description, parameters, body
and answers, with the schemas' names; ``/openapi.json`` is the machine-readable whole.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["DOCS_CSP", "add_docs", "docs_page"]

DOCS_CSP = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
_METHODS = ("get", "post", "put", "patch", "delete")


def _schema_name(schema: dict[str, Any] | None) -> str:
    if not schema:
        return "-"
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if schema.get("type") == "array":
        return f"list of {_schema_name(schema.get('items'))}"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " or ".join(_schema_name(s) for s in schema[key])
    return str(schema.get("type", "object"))


def _e(value: Any) -> str:
    return html.escape(str(value))


def _operation(path: str, method: str, op: dict[str, Any]) -> str:
    anchor = _e(op.get("operationId", f"{method}-{path}"))
    out = [f'<section id="{anchor}"><h3><code>{method.upper()} {_e(path)}</code></h3>']
    if op.get("summary"):
        out.append(f"<p><strong>{_e(op['summary'])}</strong></p>")
    if op.get("description"):
        out.append(f"<p>{_e(op['description'])}</p>")
    params = op.get("parameters") or []
    if params:
        out.append("<table><thead><tr><th>Parameter</th><th>In</th><th>Type</th>"
                   "<th>Required</th><th>About</th></tr></thead><tbody>")  # fmt: skip
        for p in params:
            out.append(f"<tr><td><code>{_e(p.get('name'))}</code></td><td>{_e(p.get('in'))}"
                       f"</td><td>{_e(_schema_name(p.get('schema')))}</td>"
                       f"<td>{'yes' if p.get('required') else 'no'}</td>"
                       f"<td>{_e(p.get('description', ''))}</td></tr>")  # fmt: skip
        out.append("</tbody></table>")
    body = op.get("requestBody")
    if body:
        kinds = ", ".join(f"{_e(k)} ({_e(_schema_name(v.get('schema')))})"
                          for k, v in (body.get("content") or {}).items())  # fmt: skip
        about = f": {_e(body['description'])}" if body.get("description") else ""
        out.append(f"<p>Body: {kinds}{about}</p>")
    answers = op.get("responses") or {}
    if answers:
        out.append("<ul>")
        for code, answer in answers.items():
            out.append(f"<li><code>{_e(code)}</code> {_e(answer.get('description', ''))}</li>")
        out.append("</ul>")
    out.append("</section>")
    return "".join(out)


def docs_page(openapi: dict[str, Any]) -> str:
    """The reference page of an OpenAPI document."""
    info = openapi.get("info", {})
    title = f"{info.get('title', 'API')} {info.get('version', '')}".strip()
    by_tag: dict[str, list[str]] = {}
    for path, item in (openapi.get("paths") or {}).items():
        for method in _METHODS:
            op = item.get(method)
            if op is not None:
                tag = (op.get("tags") or ["routes"])[0]
                by_tag.setdefault(tag, []).append(_operation(path, method, op))
    sections = "".join(f"<h2>{_e(tag)}</h2>{''.join(ops)}" for tag, ops in by_tag.items())
    schemas = sorted((openapi.get("components") or {}).get("schemas") or {})
    listed = ", ".join(f"<code>{_e(s)}</code>" for s in schemas) or "none"
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}'
            f"</title></head><body><h1>{_e(title)}</h1><p>Every operation of this API. The "
            'whole, with every schema, is <a href="/openapi.json">/openapi.json</a>; '
            "authenticate with <code>Authorization: Bearer TOKEN</code> (quarry tokens "
            f"create).</p>{sections}<h2>Schemas</h2><p>{listed}</p></body></html>")  # fmt: skip


def add_docs(app: FastAPI) -> None:
    """Serve ``docs_page`` of ``app``'s own document at ``/docs`` (made with
    ``docs_url=None, redoc_url=None``)."""
    from fastapi.responses import HTMLResponse

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(docs_page(app.openapi()),
                            headers={"Content-Security-Policy": DOCS_CSP})  # fmt: skip
