"""Each package's curated surface: sorted, and every name importable."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize(
    "name",
    [
        "quarry",
        "quarry.data",
        "quarry.features",
        "quarry.models",
        "quarry.signals",
        "quarry.tracking",
        "quarry.portfolio",
        "quarry.backtest",
        "quarry.exceptions",
        "quarry.jobs",
        "quarry.executors",
        "quarry.text",
        "quarry.serve",
        "quarry.dataservice",
        "quarry.admin",
        "quarry.cli",
    ],
)
def test_all_is_sorted_and_importable(name: str) -> None:
    module = importlib.import_module(name)
    names = list(module.__all__)

    # isort-style, as ruff's RUF022 keeps it: CONSTANTS, then Classes, then functions.
    def group(n: str) -> tuple[bool, bool, str]:
        constant = n.isupper() and len(n) > 1
        return (not constant, not n[:1].isupper(), n)

    assert names == sorted(names, key=group)
    for n in names:
        assert hasattr(module, n), n


def test_data_layer_does_not_import_upper_layers() -> None:
    import subprocess
    import sys

    upper = ("quarry.cli", "typer", "rich", "fastapi", "mlflow", "ray")
    code = (
        f"import sys, quarry.data; print(sorted(m for m in sys.modules if m.startswith({upper})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("package", "upper"),
    [
        ("quarry.features", ("quarry.cli", "quarry.models", "typer", "rich", "mlflow", "ray")),
        # models log through quarry.tracking, which imports MLflow only when it is used
        ("quarry.models", ("quarry.cli", "typer", "rich", "mlflow", "lightgbm", "ray")),
        ("quarry.portfolio", ("quarry.cli", "quarry.models", "quarry.backtest", "mlflow")),
        ("quarry.backtest", ("quarry.cli", "quarry.models", "mlflow", "empyrical")),
        # Ray only when a Ray executor is made (quarry[ray] is optional)
        ("quarry.executors", ("quarry.cli", "ray", "mlflow", "lightgbm")),
        # the data service starts with every `quarry server start`: the store's libraries
        # load with its first read, and Flight only with --flight-port
        ("quarry.dataservice", ("quarry.cli", "polars", "pyarrow", "deltalake", "numpy")),
    ],
)
def test_research_layers_import_nothing_above_them_or_heavy_at_import(
    package: str, upper: tuple[str, ...]
) -> None:
    import subprocess
    import sys

    code = f"import sys, {package}; print(sorted(m for m in sys.modules if m.startswith({upper})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_exception_tree_is_one_tree_in_one_module() -> None:
    import inspect

    import quarry.jobs
    from quarry import exceptions

    defined = {
        n
        for n, c in vars(exceptions).items()
        if inspect.isclass(c) and issubclass(c, Exception) and c.__module__ == "quarry.exceptions"
    }
    assert defined == set(exceptions.__all__) - {"Problem"}  # every class exported, nothing else
    assert all(issubclass(getattr(exceptions, n), exceptions.QuarryError) for n in defined)
    assert issubclass(exceptions.NotFittedError, exceptions.UsageError)
    assert issubclass(exceptions.ManifestError, exceptions.UsageError)
    # the tree drawn in the module's docstring names every class
    assert all(f" {n} " in exceptions.__doc__ or f"{n}\n" in exceptions.__doc__ for n in defined)
    # the jobs package re-exports the very classes, not copies
    for n in ("ManifestError", "JobServiceError", "InvalidRequest", "JobNotFound"):
        assert getattr(quarry.jobs, n) is getattr(exceptions, n)
