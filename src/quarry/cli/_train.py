"""``quarry train``: fit a model on a features file, score the segments, track it in MLflow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from quarry.cli._output import console, err, fail_cleanly
from quarry.exceptions import DataError

DEFAULT_HORIZON = 2  # Qlib's default label, Ref($close, -2)/Ref($close, -1) - 1


def _params(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise DataError(f"{path}: cannot read the parameters: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise DataError(f"{path}:{where} not valid YAML; write one 'name: value' a line") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise DataError(f"{path}: the parameters must be a mapping of 'name: value' lines")
    return loaded


def _horizon(features: Path, given: int | None) -> int:
    """The label's horizon: given, else read from the file's ``quarry.label`` metadata (set
    by ``quarry features compute``), else Qlib's default label's."""
    if given is not None:
        return given
    import pyarrow.parquet as pq

    from quarry.models import label_horizon

    files = sorted(features.glob("*.parquet")) if features.is_dir() else [features]
    meta = (pq.read_schema(files[0]).metadata or {}) if files else {}
    label = meta.get(b"quarry.label")
    return label_horizon(label.decode()) if label else DEFAULT_HORIZON


@fail_cleanly
def train_cmd(
    features: Annotated[
        Path, typer.Option(help="Features Parquet (a file or a directory of parts).")
    ],
    train: Annotated[
        str, typer.Option(help="Training segment START:END, e.g. 2015-01-01:2019-12-31.")
    ],
    valid: Annotated[str, typer.Option(help="Validation segment START:END (early stopping).")],
    test: Annotated[str, typer.Option(help="Test segment START:END (predictions are written).")],
    out: Annotated[Path, typer.Option(help="Folder for predictions.parquet and metrics.json.")],
    label_col: Annotated[str, typer.Option(help="The label column.")] = "LABEL0",
    model: Annotated[str, typer.Option(help="lightgbm, linear or mlp.")] = "lightgbm",
    params: Annotated[
        Path | None, typer.Option(help="YAML of model parameters, e.g. 'learning_rate: 0.05'.")
    ] = None,
    horizon: Annotated[
        int | None,
        typer.Option(
            help="Days ahead the label reads (the purge gap between segments); default: from "
            "the file's label, else 2."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same model.")] = 0,
    experiment: Annotated[str, typer.Option(help="MLflow experiment.")] = "quarry",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Train a model on features and a label, honest about time, and track it in MLflow.

    The segments must lie a label's horizon apart, so that no training label reaches into
    the valid or test period. Writes OUT/predictions.parquet (instrument, date, score) for
    the test segment and OUT/metrics.json with ic, icir, rank_ic and rank_icir per segment;
    logs parameters, metrics, artifacts and the model to MLflow ($QUARRY_TRACKING_URI, or a
    SQLite database under $QUARRY_HOME) and prints the run id.

    Example: quarry train --features f.parquet --model lightgbm --train 2015-01-01:2019-12-31
    --valid 2020-01-07:2020-12-31 --test 2021-01-07:2021-12-31 --out runs/lgb
    """
    import polars as pl

    from quarry.models import Segments
    from quarry.models import train as run_training

    segments = Segments.parse({"train": train, "valid": valid, "test": test})
    model_params = _params(params)
    if not features.exists():
        raise DataError(
            f"{features}: no such file or folder; compute it with quarry features compute"
        )
    gap = _horizon(features, horizon)
    source = str(features / "*.parquet") if features.is_dir() else str(features)
    with err.status("reading features"):
        frame = pl.read_parquet(source)
    with err.status(f"training {model}") as status:  # the same messages a notebook shows
        result = run_training(
            frame,
            segments,
            label=label_col,
            model=model,
            params=model_params,
            horizon=gap,
            out=out,
            experiment=experiment,
            progress=lambda message: status.update(message),
        )
    if as_json:
        print(json.dumps({"run_id": result.run_id, "out": str(out), "metrics": result.metrics}))
        return
    table = "\n".join(
        f"  {name:<6} ic {m['ic']:+.4f}  icir {m['icir']:+.3f}  "
        f"rank_ic {m['rank_ic']:+.4f}  rank_icir {m['rank_icir']:+.3f}"
        for name, m in result.metrics.items()
    )
    console.print(f"trained {model} in {result.seconds:.1f}s\n{table}\nwrote {out}")
    console.print(f"mlflow run id: {result.run_id}")
