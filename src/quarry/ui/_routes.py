"""The dashboard's route class: its errors are pages, not the APIs' JSON."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute

from quarry.exceptions import QuarryError
from quarry.ui._render import SECURITY_HEADERS, render
from quarry.ui._session import LoginNeeded, login_url

__all__ = ["PageRoute", "pages"]

_log = logging.getLogger("quarry.ui")


def _error(request: Request, status_code: int, message: str) -> HTMLResponse:
    body = render("error.html", request=request, path=request.url.path, viewer=None,
                  title=f"{status_code}", status_code=status_code, message=message)  # fmt: skip
    return HTMLResponse(body, status_code=status_code, headers=SECURITY_HEADERS)


def _warm() -> None:
    """Import MLflow and open its store (3.5 s here), so the first runs page does not."""
    from quarry.tracking._runs import search_runs

    try:
        search_runs(max_results=1)
    except Exception as exc:  # the runs page says what is wrong when it is asked for
        _log.warning("could not open the tracking store ahead of the runs page: %s", exc)


def _warm_once(request: Request) -> None:
    state = request.app.state
    if getattr(state, "ui_warm_pending", False):
        state.ui_warm_pending = False
        threading.Thread(target=_warm, name="dashboard-warm", daemon=True).start()


class PageRoute(APIRoute):
    """A page's route: no session sends to the login page (and back after it); an error is
    a page that says what was wrong."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            _warm_once(request)
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
            except QuarryError as exc:  # what the library says is wrong, as it says it
                return _error(request, 422, str(exc))
            except Exception as exc:  # a bug: logged with its traceback, told in one line
                _log.exception("page %s failed", request.url.path)
                return _error(request, 500, f"this page failed ({type(exc).__name__}: "
                              f"{exc}); the server's log has the details")  # fmt: skip

        return answer


def pages() -> APIRouter:
    """A router of pages (kept out of the API's OpenAPI document)."""
    return APIRouter(route_class=PageRoute, include_in_schema=False)
