"""Model serving: every registered model behind one REST service, following the registry's
aliases.

- ``Catalog``: the served models (``ModelRef``: a name and an alias, ``champion`` by
  default), each at the version its alias points at; loaded versions kept within a count or
  a memory bound, least recently used unloaded and loaded again on demand. A request holds
  one immutable ``Version`` from start to end.
- ``AliasWatcher``: the background loop that follows the aliases: a promoted version is
  loaded first, then switched to in one reference swap, so no request fails or mixes
  versions during a promotion.
- ``create_app``: the FastAPI app (catalog, predict by instruments and a date or by a table
  in JSON or Arrow, train through the job service, /healthz, /metrics); bearer tokens and
  projects from the job service's database.
- ``serve_models``: what ``quarry serve`` runs.
"""

from quarry.serve._app import create_app, workflow_file
from quarry.serve._catalog import Catalog, ModelRef, Served, Version
from quarry.serve._inputs import ARROW
from quarry.serve._server import serve_models
from quarry.serve._watch import AliasWatcher

__all__ = [
    "ARROW",
    "AliasWatcher",
    "Catalog",
    "ModelRef",
    "Served",
    "Version",
    "create_app",
    "serve_models",
    "workflow_file",
]
