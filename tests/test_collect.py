"""The test suite itself: collecting it runs no test and so must create nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


@pytest.mark.slow
def test_collecting_the_suite_writes_nothing(tmp_path: Path) -> None:
    tmp, home, quarry_home = tmp_path / "tmp", tmp_path / "home", tmp_path / "quarry-home"
    for d in (tmp, home):
        d.mkdir()
    env = {
        **os.environ,
        "TMPDIR": str(tmp),
        "HOME": str(home),
        "QUARRY_HOME": str(quarry_home),
        "PYTHONDONTWRITEBYTECODE": "1",
        # matplotlib's font cache, written by importing it, is the library's, not a test's
        "MPLCONFIGDIR": str(tmp_path / "matplotlib"),
    }
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         str(TESTS)],
        capture_output=True, text=True, env=env, cwd=TESTS.parent, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert " collected" in out.stdout.splitlines()[-1]
    written = [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")]
    assert sorted(w for w in written if not w.startswith("matplotlib")) == ["home", "tmp"]
