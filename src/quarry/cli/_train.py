"""``quarry train``: fit a model on a features file, score the segments, track it in MLflow."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer

from quarry.cli._output import (
    console,
    err,
    fail_cleanly,
    print_json,
    tracking_line,
    warn,
)
from quarry.exceptions import DataError, UsageError

# Shared with quarry search, which reads the same features files.
Horizon = Annotated[
    int | None,
    typer.Option(
        help="Days ahead the label reads (the purge gap between segments); default: from the "
        "file's label, else 2."
    ),
]

DEFAULT_HORIZON = 2  # Qlib's default label, Ref($close, -2)/Ref($close, -1) - 1


def _params(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    from quarry._yaml import load_yaml, read_file

    loaded = load_yaml(read_file(path, "parameters"), str(path)).data
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise DataError(f"{path}: the parameters must be a mapping of 'name: value' lines")
    return loaded


_EXPECTED = (
    "give the features as Parquet (FILE.parquet or a folder of them) or Arrow IPC "
    "(FILE.arrow) with instrument and date columns, as quarry features compute writes"
)


def _feature_files(features: Path) -> list[Path]:
    """The file(s) of ``--features``: a Parquet or Arrow IPC file, or a folder of Parquet
    files; each checked to be what its name says."""
    import pyarrow as pa

    from quarry.features._tables import is_arrow, read_schema

    if not features.exists():
        raise DataError(
            f"{features}: no such file or folder; compute it with quarry features compute"
        )
    files = sorted(features.glob("*.parquet")) if features.is_dir() else [features]
    if not files:
        raise DataError(f"{features}: no .parquet files in the folder; {_EXPECTED}")
    for file in files:
        try:
            read_schema(file)
        except (pa.ArrowException, OSError) as exc:
            if file.suffix.lower() == ".parquet" or is_arrow(file):  # say what is wrong
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                why = f" ({first.rstrip('.')})" if first else ""
            else:
                why = f" (a {file.suffix[1:].upper()} file)" if file.suffix else ""
            where = f"{features}" if file == features else f"{features}: {file.name}"
            kind = "an Arrow IPC" if is_arrow(file) else "a Parquet"
            raise DataError(f"{where}: not {kind} file{why}; {_EXPECTED}") from None
    return files


def _read_features(features: Path, files: list[Path], label: str) -> Any:
    """The features frame, its keys checked: a date column of dates, the label present."""
    import polars as pl

    from quarry.features._tables import read_frame

    try:
        frame = read_frame(files)
    except (pl.exceptions.PolarsError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{features}: cannot read it ({first}); {_EXPECTED}") from None
    for column in ("instrument", "date", label):
        if column not in frame.columns:
            shown = ", ".join(frame.columns[:8]) + (", ..." if frame.width > 8 else "")
            hint = (
                "compute the features with --label, or name the label with --label-col"
                if column == label
                else _EXPECTED
            )
            raise DataError(f"{features}: no {column!r} column (columns: {shown}); {hint}")
    kind = frame.schema["date"]
    if isinstance(kind, pl.Datetime):
        frame = frame.with_columns(pl.col("date").dt.date())
    elif kind != pl.Date:
        what = "text" if kind == pl.String else "values"
        example = frame["date"].drop_nulls().head(1).to_list()
        shown = f", e.g. {example[0]!r}" if example else ""
        raise DataError(
            f"{features}: the date column holds {what} ({kind}{shown}), not dates; "
            "write it as a Parquet date column, as quarry features compute does"
        )
    return frame


def _recipe(files: list[Path]) -> Any:
    """How the features were made, from the file's metadata (``quarry.features`` and
    ``quarry.label``, written by ``quarry features compute``): logged with the model."""
    import json

    from quarry.features._tables import read_schema
    from quarry.models import Recipe

    meta = read_schema(files[0]).metadata or {}
    features = json.loads(meta.get(b"quarry.features", b"{}").decode())
    label = meta.get(b"quarry.label")
    return Recipe(features, label.decode() if label else None)


def _horizon(recipe: Any, given: int | None) -> int:
    """The label's horizon: given, else the file's label's, else Qlib's default label's."""
    if given is not None:
        return given
    from quarry.models import label_horizon

    return label_horizon(recipe.label) if recipe.label else DEFAULT_HORIZON


def _figure(value: float, spec: str) -> str:
    """A metric for the table; an undefined one (NaN) as n/a."""
    if value is None or not math.isfinite(value):
        return f"{'n/a':>{len(format(0.0, spec))}}"
    return format(value, spec)


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
    horizon: Horizon = None,
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
    from quarry.models import Segments, validate_params
    from quarry.models import train as run_training

    segments = Segments.parse({"train": train, "valid": valid, "test": test})
    validate_params(model, None)  # the model's name
    model_params = _params(params)
    try:
        validate_params(model, model_params)
    except UsageError as exc:
        raise UsageError(f"{params}: {exc}" if params is not None else str(exc)) from None
    files = _feature_files(features)
    recipe = _recipe(files)
    gap = _horizon(recipe, horizon)
    with err.status("reading features"):
        frame = _read_features(features, files, label_col)
    with err.status(f"training {model}") as status:
        result = run_training(
            frame,
            segments,
            label=label_col,
            model=model,
            params=model_params,
            horizon=gap,
            seed=seed,
            out=out,
            experiment=experiment,
            progress=lambda message: status.update(message),
            recipe=recipe,
        )
    for message in result.warnings:
        warn(message)
    err.print(tracking_line(), highlight=False, soft_wrap=True)
    if as_json:
        print_json(
            {
                "run_id": result.run_id,
                "out": str(out),
                "constant": result.constant,
                "metrics": result.metrics,
            }
        )
        return
    table = "\n".join(
        f"  {name:<6} ic {_figure(m['ic'], '+.4f')}  icir {_figure(m['icir'], '+.3f')}  "
        f"rank_ic {_figure(m['rank_ic'], '+.4f')}  rank_icir {_figure(m['rank_icir'], '+.3f')}"
        for name, m in result.metrics.items()
    )
    console.print(f"trained {model} in {result.seconds:.1f}s\n{table}\nwrote {out}")
    console.print(f"mlflow run id: {result.run_id}")
