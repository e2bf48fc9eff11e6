"""What a command costs before it works: ``--help`` loads none of the heavy libraries (each
one is imported by the command that uses it), so it answers at once."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# What some commands use and `--help` never needs. (pydantic comes with Typer itself.)
HEAVY = ("polars", "numpy", "pandas", "pyarrow", "deltalake", "numba", "scipy", "sklearn",
         "lightgbm", "torch", "cvxpy", "matplotlib", "plotly", "mlflow", "sqlalchemy", "optuna",
         "fastapi", "uvicorn", "ray", "jsonschema")  # fmt: skip

PROBE = """
import json, sys
from quarry.cli._main import main
sys.argv = ["quarry", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY))
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "command",
    [
        "",
        "data",
        "data read",
        "features compute",
        "train",
        "search",
        "backtest",
        "run",
        "serve",
        "server start",
        "jobs",
        "models",
        "tokens create",
    ],
)
def test_help_imports_no_heavy_library(command: str) -> None:
    probe = f"HEAVY = {HEAVY!r}\n{PROBE}"
    out = subprocess.run([sys.executable, "-c", probe, *command.split(), "--help"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert "Usage" in out.stdout, out.stdout
    found = json.loads(out.stderr.strip().splitlines()[-1])
    assert found == {"code": 0, "heavy": []}, (command, found)
