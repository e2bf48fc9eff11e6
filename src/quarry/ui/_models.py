"""The models pages: registered models with their aliases and champion's figures, the
models this server serves, and a model with its versions, every promotion decision (the
gate's, with the challenger's and the champion's figures side by side, and its reason) and
every move of an alias.

A model of a project the viewer is not a member of is not shown (one without a project is
everyone's), as the model API does.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import Response

from quarry.exceptions import UsageError
from quarry.tracking import KEY_FIGURES, describe_model, list_models
from quarry.tracking._runs import open_store
from quarry.ui._render import page
from quarry.ui._routes import pages
from quarry.ui._session import Viewer, ViewerDep

__all__ = ["router"]

router = pages()
Name = Annotated[str, PathParam(min_length=1, max_length=256)]
# the gate's figures as its run logs them: gate_challenger_<figure>, gate_champion_<figure>
GATE_FIGURES = ("ic", "rank_ic", "icir", "rank_icir", "sharpe", "information_ratio",
                "excess_annualized_return", "max_drawdown")  # fmt: skip


def _visible(viewer: Viewer, project: str | None) -> bool:
    return project is None or project in viewer.projects


def _served(request: Request) -> list[dict[str, Any]]:
    catalog = getattr(request.app.state, "served", None)
    if catalog is None:
        return []
    out = []
    for name in catalog.names():
        entry = catalog.served(name)
        if entry is not None:
            out.append(entry.view())
    return out


@router.get("/models")
def models_page(request: Request, viewer: ViewerDep) -> Response:
    """Registered models, their aliases and their champion's key figures; the served ones."""
    open_store()  # the first time, by one thread: the warm-up may be opening it too
    every = list_models()
    models = [m for m in every if _visible(viewer, m.project)]
    served = [s for s in _served(request) if _visible(viewer, s.get("project") or None)]
    return page(request, "models.html", viewer=viewer, title="Models", models=models,
                elsewhere=len(every) - len(models),
                figures=KEY_FIGURES, served=served,
                serving=getattr(request.app.state, "served", None) is not None)  # fmt: skip


def decisions(versions: list[Any]) -> list[dict[str, Any]]:
    """Each version the gate decided on: promoted or not, why, and both sides' figures."""
    out = []
    for v in versions:
        if not v.gate:
            continue
        rows = []
        for figure in GATE_FIGURES:
            mine = v.metrics.get(f"gate_challenger_{figure}")
            theirs = v.metrics.get(f"gate_champion_{figure}")
            if mine is not None or theirs is not None:
                rows.append({"figure": figure, "challenger": mine, "champion": theirs})
        out.append({"version": v.version, "run_id": v.run_id, "created": v.created,
                    "promoted": v.gate.get("promoted") == "true",
                    "reason": v.gate.get("reason", ""), "rows": rows})  # fmt: skip
    return out


@router.get("/models/{name}")
def model_page(request: Request, name: Name, viewer: ViewerDep) -> Response:
    """A model: versions, aliases, the gate's decisions and the aliases' history."""
    open_store()
    try:
        detail = describe_model(name)
    except UsageError as exc:
        raise HTTPException(404, str(exc)) from exc
    if not _visible(viewer, detail.project):
        raise HTTPException(404, f"no registered model {name!r} in your projects")
    served = [s for s in _served(request) if s["name"] == name]
    return page(request, "model.html", viewer=viewer, title=f"Model {name}", model=detail,
                figures=KEY_FIGURES, decisions=decisions(detail.versions), served=served,
                history=list(reversed(detail.history)))  # fmt: skip
