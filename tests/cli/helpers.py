"""Running the CLI in-process, as the tests do."""

from __future__ import annotations

import json
from typing import Any

from typer.testing import CliRunner

from quarry.cli import app

_runner = CliRunner()


def run(*args: str, columns: int = 200) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``quarry ARGS`` (no progress bars, wide output)."""
    env = {"QUARRY_NO_PROGRESS": "1", "COLUMNS": str(columns)}
    result = _runner.invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON: write an undefined figure as null")


def parse_json(stdout: str) -> Any:
    """``stdout`` as strict JSON: NaN, Infinity and anything besides the one document fail."""
    return json.loads(stdout, parse_constant=_no_constant)


# Libraries some commands use and others must not pay for. (pydantic comes with Typer itself.)
HEAVY = ("polars", "numpy", "pandas", "pyarrow", "deltalake", "numba", "scipy", "sklearn",
         "lightgbm", "torch", "cvxpy", "matplotlib", "plotly", "mlflow", "sqlalchemy", "optuna",
         "fastapi", "uvicorn", "ray", "jsonschema")  # fmt: skip

_PROBE = """
import json, sys
from quarry.cli._main import main
watched = set(json.loads(sys.argv.pop(1)))
sys.argv = ["quarry", *sys.argv[1:]]
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code or 0
imported = sorted({m if m in watched else m.split(".")[0] for m in sys.modules} & watched)
print(json.dumps([code, imported]), file=sys.stderr)
"""


def imports_of(*args: str, watch: tuple[str, ...] = HEAVY) -> tuple[int, list[str], str]:
    """``quarry ARGS`` in a fresh process: its exit code, which of ``watch`` it imported (a
    package counts with any of its modules; a dotted name is matched by itself), and its
    stdout."""
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(watch), *args],
                          capture_output=True, text=True,
                          env={**os.environ, "QUARRY_NO_PROGRESS": "1"})  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert lines, done.stderr
    code, imported = json.loads(lines[-1])
    return code, imported, done.stdout
