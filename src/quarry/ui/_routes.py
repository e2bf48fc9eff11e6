"""The dashboard's route class: its errors are pages, not the APIs' JSON."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute

from quarry.ui._render import SECURITY_HEADERS, render
from quarry.ui._session import LoginNeeded, login_url

__all__ = ["PageRoute", "pages"]


def _error(request: Request, status_code: int, message: str) -> HTMLResponse:
    body = render("error.html", request=request, path=request.url.path, viewer=None,
                  title=f"{status_code}", status_code=status_code, message=message)  # fmt: skip
    return HTMLResponse(body, status_code=status_code, headers=SECURITY_HEADERS)


class PageRoute(APIRoute):
    """A page's route: no session sends to the login page (and back after it); an error is
    a page that says what was wrong."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginNeeded as need:
                return RedirectResponse(login_url(need.next_path), status_code=303)
            except HTTPException as exc:
                return _error(request, exc.status_code, str(exc.detail))
            except RequestValidationError as exc:
                where = "; ".join(
                    f"{'.'.join(str(p) for p in e.get('loc', ())[1:])}: {e.get('msg')}"
                    for e in exc.errors()
                )  # fmt: skip
                return _error(request, 422, f"bad request: {where}")

        return answer


def pages() -> APIRouter:
    """A router of pages (kept out of the API's OpenAPI document)."""
    return APIRouter(route_class=PageRoute, include_in_schema=False)
