"""``quarry search``: hyperparameter search on a features file, trials here or on Ray."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from quarry.cli._output import console, err, fail_cleanly, print_json, tracking_line
from quarry.cli._train import (
    Horizon,
    _feature_files,
    _figure,
    _horizon,
    _params,
    _read_features,
    _recipe,
)
from quarry.exceptions import DataError, UsageError

_TOP = 10  # trials in the table at the end
_EXAMPLE_SPACE = "learning_rate: [float, 0.01, 0.3, log]"


def _space(path: Path | None, model: str, fixed: dict[str, Any]) -> dict[str, Any] | None:
    """The space file's ranges, each checked against the model, or None for the model's
    default space; an error names the file, the line and the key."""
    from quarry._yaml import load_yaml, read_file
    from quarry.models import DEFAULT_SPACES, parse_space

    if path is None:
        if model not in DEFAULT_SPACES:
            raise UsageError(
                f"no default search space for model {model!r}: give one with --space FILE "
                f"(lines such as 'hidden: [choice, [[64], [256, 64]]]')"
            )
        return None
    document = load_yaml(read_file(path, "search space"), str(path))
    loaded = document.data
    if not isinstance(loaded, dict) or not loaded:
        raise UsageError(
            f"{path}: a search space is a mapping of 'name: [kind, ...]' lines, such as "
            f"'{_EXAMPLE_SPACE}'"
        )
    for key, value in loaded.items():
        try:
            parse_space({key: value}, model=model, fixed=fixed)
        except UsageError as exc:
            line = document.line([key])
            where = f"line {line}: " if line is not None else ""
            raise UsageError(f"{path}: {where}{exc}") from None
    return loaded


def _write(out: Path, report: dict[str, Any]) -> None:
    """OUT/search.json and OUT/params.yaml (the best parameters, for quarry train --params:
    each value in JSON's notation, which YAML reads back as the same value)."""
    from quarry._json import dumps

    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "search.json").write_text(dumps(report))
        lines = [f"{k}: {json.dumps(v)}" for k, v in report["best_params"].items()]
        (out / "params.yaml").write_text("\n".join(lines) + "\n")
    except OSError as exc:
        raise DataError(
            f"{out}: cannot write ({exc.strerror or exc}); choose another --out"
        ) from None


def _table(report: dict[str, Any]) -> Any:
    """The best trials, best first, with their searched parameters."""
    from rich.table import Table

    metric = report["metric"]
    ranked = sorted(
        report["trials"],
        key=lambda t: (t["value"] is None, -(t["value"] or 0.0), t["number"]),
    )[:_TOP]
    names = list(report["trials"][0]["params"]) if report["trials"] else []
    table = Table(
        title=f"best {len(ranked)} of {len(report['trials'])} trials", title_justify="left"
    )
    table.add_column("trial", justify="right")
    table.add_column(metric, justify="right")
    for name in names:
        table.add_column(name, justify="right")
    for trial in ranked:
        value = trial["value"] if trial["value"] is not None else math.nan
        cells = [_value(trial["params"][name]) for name in names]
        table.add_row(str(trial["number"]), _figure(value, "+.4f"), *cells)
    return table


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@fail_cleanly
def search_cmd(
    features: Annotated[
        Path, typer.Option(help="Features Parquet (a file or a directory of parts).")
    ],
    train: Annotated[
        str, typer.Option(help="Training segment START:END, e.g. 2015-01-01:2019-12-31.")
    ],
    valid: Annotated[
        str, typer.Option(help="Validation segment START:END (each trial is scored on it).")
    ],
    label_col: Annotated[str, typer.Option("--label", "--label-col", help="The label column.")] = (
        "LABEL0"
    ),
    model: Annotated[str, typer.Option(help="lightgbm, linear or mlp.")] = "lightgbm",
    space: Annotated[
        Path | None,
        typer.Option(
            help="YAML of the ranges to search, e.g. 'num_leaves: \\[int, 16, 256]'; default: "
            "the model's own (lightgbm, linear)."
        ),
    ] = None,
    params: Annotated[
        Path | None,
        typer.Option(help="YAML of parameters every trial shares, e.g. 'num_boost_round: 200'."),
    ] = None,
    trials: Annotated[int, typer.Option(min=1, help="How many trials in all.")] = 20,
    jobs: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Trials asked for and run at once; default: the executor's CPUs (local: 1). "
            "The result depends on it, not on the executor.",
        ),
    ] = None,
    metric: Annotated[
        str, typer.Option(help="Validation figure to maximize: rank_ic, ic, rank_icir, icir ...")
    ] = "rank_ic",
    horizon: Horizon = None,
    seed: Annotated[int, typer.Option(help="Seed of the sampler and of every model.")] = 0,
    executor: Annotated[
        str, typer.Option(help="Where trials run: local (one after another) or ray.")
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(help="Ray cluster for --executor ray: auto, host:port or ray://host:10001."),
    ] = None,
    experiment: Annotated[str, typer.Option(help="MLflow experiment.")] = "quarry",
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for search.json and params.yaml (the best parameters)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print search.json's content on stdout.")
    ] = False,
) -> None:
    """Search a model's parameters on a features file, scoring each trial on the validation
    segment (the test period is never looked at).

    Optuna's sampler asks for --jobs trials at a time, the executor runs them (--executor
    ray: as Ray tasks, in parallel across the cluster), and their scores go back to the
    sampler in trial order; so a seed and a --jobs give the same search on any executor.
    Progress goes to stderr; each trial is a nested MLflow run under one search run. At the
    end a table shows the best trials; --out writes OUT/search.json (the best parameters and
    validation value, and every trial) and OUT/params.yaml, which quarry train takes as
    --params.

    \b
    A --space file holds one range a line:
      learning_rate: \\[float, 0.01, 0.3, log]
      num_leaves: \\[int, 16, 256]
      boosting: \\[choice, \\[gbdt, dart]]

    Examples:

      quarry search --features f.parquet --train 2015-01-01:2019-12-31 --valid
      2020-01-07:2020-12-31 --trials 40 --out runs/search

      quarry search --features f.parquet --train 2015-01-01:2019-12-31 --valid
      2020-01-07:2020-12-31 --space space.yaml --params fixed.yaml --trials 200 --executor
      ray --ray-address auto --out runs/search

      quarry train --features f.parquet --params runs/search/params.yaml --train
      2015-01-01:2019-12-31 --valid 2020-01-07:2020-12-31 --test 2021-01-07:2021-12-31
      --out runs/best
    """
    from datetime import date

    from quarry.executors import executor as make_executor
    from quarry.models import SEARCH_METRICS, Segments, validate_params
    from quarry.models import search as run_search

    validate_params(model, None)  # the model's name
    if metric not in SEARCH_METRICS:
        raise UsageError(f"--metric {metric!r}: choose one of {', '.join(SEARCH_METRICS)}")
    # Search never reads the test segment; Segments wants one, so the last day there is
    # stands in for it (after valid, so the order checks still hold).
    segments = Segments.parse({"train": train, "valid": valid, "test": (date.max, date.max)})
    fixed = _params(params)
    try:
        fixed = validate_params(model, fixed)
    except UsageError as exc:
        raise UsageError(f"{params}: {exc}" if params is not None else str(exc)) from None
    ranges = _space(space, model, fixed)
    files = _feature_files(features)
    gap = _horizon(_recipe(files), horizon)
    with make_executor(executor, address=ray_address) as runner:
        with err.status("reading features"):
            frame = _read_features(features, files, label_col)
        batch = jobs if jobs is not None else runner.workers
        with err.status(f"searching {model}") as status:

            def progress(message: str) -> None:
                if message.startswith("trial "):  # a finished trial: keep its line
                    err.print(message, highlight=False)
                status.update(message)

            result = run_search(
                frame,
                segments,
                model=model,
                space=ranges,
                fixed=fixed,
                trials=trials,
                jobs=batch,
                horizon=gap,
                seed=seed,
                metric=metric,
                experiment=experiment,
                progress=progress,
                executor=runner,
                label=label_col,
            )
    best = next(t for t in result.trials if t["value"] == result.best_value)
    report = {
        "model": model,
        "metric": metric,
        "best_value": result.best_value,
        "best_params": result.best_params,
        "best_trial": best["number"],
        "trials": result.trials,
        "jobs": batch,
        "seed": seed,
        "executor": executor,
        "label": label_col,
        "horizon": gap,
        "segments": {"train": train, "valid": valid},
        "features": str(features),
        "mlflow_run_id": result.parent_run_id,
    }
    if out is not None:
        _write(out, report)
    err.print(tracking_line(), highlight=False, soft_wrap=True)
    if as_json:
        print_json(report)
        return
    console.print(_table(report))
    shown = ", ".join(f"{k}={_value(v)}" for k, v in result.best_params.items())
    console.print(
        f"best: trial {best['number']}, validation {metric} {result.best_value:+.4f}\n"
        f"parameters: {shown}",
        highlight=False,
        soft_wrap=True,
    )
    if out is not None:
        console.print(f"wrote {out / 'search.json'} and {out / 'params.yaml'}", highlight=False)
    console.print(f"mlflow run id: {result.parent_run_id}", highlight=False)
