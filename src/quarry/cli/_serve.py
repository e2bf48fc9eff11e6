"""``quarry serve``: every registered model behind one REST service (``quarry.serve``)."""

from __future__ import annotations

from typing import Annotated

import typer

from quarry.cli._output import fail_cleanly, memory_flag
from quarry.exceptions import UsageError


@fail_cleanly
def serve_cmd(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8766,
    models: Annotated[
        list[str] | None,
        typer.Option(
            "--models",
            help="A model to serve, NAME or NAME@ALIAS (repeat the option, or separate "
            "with commas; default: every registered model at its champion).",
        ),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            help="The data store predictions by date compute features from (default "
            "$QUARRY_STORE, else $QUARRY_HOME/store)."
        ),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(
            help="The job service's database, for API tokens and training jobs: "
            "sqlite:///PATH or postgresql://... (default $QUARRY_DB, else SQLite under "
            "$QUARRY_HOME)."
        ),
    ] = None,
    max_loaded: Annotated[
        int | None,
        typer.Option(
            help="At most this many model versions in memory; the least recently used is "
            "unloaded, and loaded again when asked for."
        ),
    ] = None,
    memory: Annotated[
        str | None,
        typer.Option(
            help="At most this much memory of loaded versions, e.g. 2Gi (measured by their "
            "pickles); least recently used unloaded first."
        ),
    ] = None,
    max_in_flight: Annotated[
        int,
        typer.Option(help="Predictions computed at once; more are answered 503 at once."),
    ] = 32,
    poll: Annotated[
        float, typer.Option(help="Seconds between looks at the registry's aliases.")
    ] = 1.0,
) -> None:
    """Serve registered models over REST (docs at /docs): the catalog, predictions by
    instruments and a date or by a table (JSON or Arrow), training through the job service.

    A promotion (quarry models promote, or the gate) is followed within a second: the new
    version is loaded, then answers; no request fails or mixes versions. Tokens are the job
    service's (quarry tokens create).

    Example: quarry serve --models alpha@champion --store ./store --max-loaded 4
    """
    from quarry.serve import ModelRef, serve_models

    refs = None
    if models:
        refs = [ModelRef.parse(part) for text in models for part in text.split(",") if part]
    size = memory_flag(memory, "2Gi")
    if max_in_flight < 1:
        raise UsageError(f"--max-in-flight {max_in_flight}: give 1 or more")
    serve_models(host=host, port=port, models=refs, store=store, db=db, max_loaded=max_loaded,
                 memory=size, max_in_flight=max_in_flight, poll=poll)  # fmt: skip
