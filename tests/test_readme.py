"""The README's own examples: every command block runs, verbatim, on `make demo`'s store.

The slow test plays a newcomer: in a fresh folder that stands for the repository (``.venv`` and
``examples`` linked to the real ones, ``QUARRY_HOME`` inside it), it makes the demo store the
way the Makefile's demo target does, then runs each ```sh block of README.md with bash and each
```python block with the venv's Python, in order, text unchanged (only the first block, ``make
demo`` / ``make test``, is left out). Each block must exit 0 and print no traceback, no
"internal error" and no warning, and what it makes must hold real results.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import empyrical
import polars as pl
import pytest
import typer
from polars.testing import assert_frame_equal

from quarry.cli import app
from tests.cli.helpers import run

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
BLOCK_TIMEOUT = 900.0  # seconds; the three example workflows together take about 3 minutes


@dataclass(frozen=True)
class Block:
    lang: str
    text: str
    line: int  # of the opening fence in README.md

    def option(self, name: str) -> list[str]:
        """Every value given to ``--name`` in the block, in order."""
        return re.findall(rf"--{name}[ =](\S+)", self.text)


def readme_blocks() -> list[Block]:
    """README.md's ```sh and ```python blocks, in order."""
    text = README.read_text()
    return [
        Block(m["lang"], m["body"], text.count("\n", 0, m.start()) + 1)
        for m in re.finditer(r"^```(?P<lang>\w*)\n(?P<body>.*?)^```\s*$", text, re.M | re.S)
        if m["lang"] in ("sh", "python")
    ]


def demo_store_command() -> str:
    """The command with which the Makefile's demo target generates its store."""
    make = (REPO / "Makefile").read_text().replace("\\\n", " ")
    demo_dir = re.search(r"^DEMO_DIR \?= (\S+)", make, re.M)
    generate = re.search(r"\|\|\s*(\$\(BIN\)/quarry data generate [^\n]*)", make)
    assert demo_dir and generate, "the Makefile's demo target no longer runs quarry data generate"
    command = generate[1].replace("$(BIN)", ".venv/bin").replace("$(DEMO_DIR)", demo_dir[1])
    return " ".join(command.split())


# --- the cheap test: every command the README shows exists --------------------------------


def quarry_subcommands(text: str) -> list[list[str]]:
    """The subcommand words of each ``.venv/bin/quarry ...`` in ``text``: words taken while
    they select a command group (a word a group does not know is kept, to fail its check)."""
    root = typer.main.get_command(app)
    found = []
    for match in re.finditer(r"\.venv/bin/quarry\b([^\n]*)", text):
        command: object = root
        path: list[str] = []
        for word in match[1].split():
            group: dict[str, object] | None = getattr(command, "commands", None)
            if group is None:  # a command, not a group: the rest are its arguments
                break
            path.append(word)
            command = group.get(word)
        found.append(path)
    return found


def test_readme_commands_name_existing_subcommands() -> None:
    paths = [p for b in readme_blocks() if b.lang == "sh" for p in quarry_subcommands(b.text)]
    assert len(paths) > 20  # the README's commands were found
    for path in sorted(set(map(tuple, paths))):
        code, _, err = run(*path, "--help")
        assert code == 0, f"README: `quarry {' '.join(path)}` is not a command: {err}"


# --- the newcomer path -----------------------------------------------------------------------


@dataclass(frozen=True)
class Ran:
    block: Block
    seconds: float
    code: int | None  # None: it did not end within BLOCK_TIMEOUT
    stdout: str
    stderr: str
    left_running: bool  # processes of the block still alive after it ended


def _run_block(block: Block, index: int, root: Path, env: dict[str, str]) -> Ran:
    """Run one block in ``root`` in a process group of its own; whatever it leaves running (a
    server started with &) is killed afterwards, whether the block passed or not."""
    scripts = root.parent / "blocks"
    scripts.mkdir(exist_ok=True)
    if block.lang == "python":
        script = scripts / f"{index}.py"
        argv = [str(root / ".venv" / "bin" / "python"), str(script)]
    else:
        script = scripts / f"{index}.sh"
        argv = ["bash", "-e", "-o", "pipefail", str(script)]  # any failing command fails it
    script.write_text(block.text)
    out_path, err_path = scripts / f"{index}.out", scripts / f"{index}.err"
    start = time.monotonic()
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = subprocess.Popen(argv, cwd=root, env=env, stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=err, start_new_session=True)  # fmt: skip
        try:
            code: int | None = process.wait(timeout=BLOCK_TIMEOUT)
        except subprocess.TimeoutExpired:
            code = None
        seconds = time.monotonic() - start
        left_running = _alive(process.pid, grace=30.0 if code is not None else 0.0)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return Ran(block, seconds, code, out_path.read_text(errors="replace"),
               err_path.read_text(errors="replace"), left_running)  # fmt: skip


def _alive(group: int, grace: float) -> bool:
    """Whether any process of ``group`` is still alive after ``grace`` seconds."""
    deadline = time.monotonic() + grace
    while True:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.2)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _segment(block: Block, name: str) -> tuple[date, date]:
    start, end = block.option(name)[0].split(":")
    return date.fromisoformat(start), date.fromisoformat(end)


def check_data(ran: Ran, root: Path) -> None:
    as_of = date.fromisoformat(ran.block.option("as-of")[0][:10])
    read = pl.read_parquet(root / ran.block.option("out")[0])
    assert read.height > 0
    assert {"instrument", "date", "close", "volume", "eps"} <= set(read.columns)
    assert read["date"].max() <= as_of  # nothing from after the knowledge time
    assert read["eps"].drop_nulls().len() > 0  # fundamentals published by then
    assert re.search(r"^healthy$", ran.stdout, re.M)  # quarry data check


def check_features(ran: Ran, root: Path) -> None:
    outs = [pl.read_parquet(root / out) for out in ran.block.option("out")]
    store_features = outs[0]
    names = [c for c in store_features.columns if c not in ("instrument", "date", "LABEL0")]
    assert len(names) == 158 and "LABEL0" in store_features.columns  # Alpha158 and the label
    for frame in outs:  # every feature computed has values, none is all missing
        for name in frame.columns:
            if name not in ("instrument", "date"):
                values = frame[name].fill_nan(None).drop_nulls()
                assert values.len() > 0, f"{name} has no value"


def check_train(ran: Ran, root: Path) -> None:
    features = pl.read_parquet(root / ran.block.option("features")[0], columns=["date"])
    train, test = _segment(ran.block, "train"), _segment(ran.block, "test")
    # the features file covers the training segment, from its start, and the test segment
    assert features["date"].min() <= train[0] and features["date"].max() >= test[1]
    out = root / ran.block.option("out")[-1]  # the train command's (a search may come first)
    metrics = json.loads((out / "metrics.json").read_text())
    assert _finite(metrics["test"]["rank_ic"]) and metrics["test"]["rank_ic"] > 0  # planted alpha
    predictions = pl.read_parquet(out / "predictions.parquet")
    assert predictions.height > 0
    assert test[0] <= predictions["date"].min() and predictions["date"].max() <= test[1]


def check_search(ran: Ran, root: Path) -> None:
    found = json.loads((root / ran.block.option("out")[0] / "search.json").read_text())
    trials = int(ran.block.option("trials")[0])
    assert len(found["trials"]) == trials
    # the best parameters, trained again by `quarry train --params`, give the validation
    # figure the search recorded for them
    trained = json.loads((root / ran.block.option("out")[-1] / "metrics.json").read_text())
    assert math.isclose(trained["valid"]["rank_ic"], found["best_value"], rel_tol=1e-9), (
        trained["valid"],
        found["best_value"],
    )


def check_ray_run(ran: Ran, root: Path) -> None:
    results = json.loads((root / ran.block.option("out")[0] / "results.json").read_text())
    assert results["executor"] == "ray"
    # the local run's research steps, shared; the gate is decided again, since the model it
    # registered is now the champion it compares with
    steps = results["steps"]
    assert {steps["features"], steps["train"], steps["backtest"]} == {"cached"}, steps


def check_backtest(ran: Ran, root: Path) -> None:
    for out in ran.block.option("out"):
        metrics = json.loads((root / out / "metrics.json").read_text())
        assert metrics["orders_filled"] > 0 and metrics["traded"]
        assert metrics["signal_rows_matched"] == metrics["signal_rows"] > 0
        assert metrics["warnings"] == []
        returns = pl.read_parquet(root / out / "returns.parquet")
        # the file holds exactly the days the metrics count (what the README says)
        assert returns.height == metrics["days"] > 200
        net = returns["return_net"].to_numpy()
        assert metrics["annualized_return"] == pytest.approx(empyrical.annual_return(net))
        assert metrics["sharpe"] == pytest.approx(empyrical.sharpe_ratio(net))


def check_python(ran: Ran, root: Path) -> None:
    shapes = re.search(r"\((\d+), (\d+)\) \((\d+), (\d+)\)", ran.stdout)
    assert shapes, ran.stdout
    days, instruments, rows, columns = map(int, shapes.groups())
    assert days >= 1500 and instruments == 300  # the whole store: a dates x instruments panel
    assert rows > 300_000 and columns == 2 + 158 + 1  # keys, Alpha158, the label


def check_workflows(ran: Ran, root: Path) -> None:
    for workflow in sorted((REPO / "examples" / "workflows").glob("*.yaml")):
        assert f"examples/workflows/{workflow.name}" in ran.block.text, workflow.name
    outs = ran.block.option("out")
    assert len(outs) == len(set(outs)) == 3
    for out in outs:
        results = json.loads((root / out / "results.json").read_text())
        assert _finite(results["rank_ic"]) and results["rank_ic"] > 0, (out, results)


def check_text(ran: Ran, root: Path) -> None:
    """The planted tone is in the fields and the workflow finds it out of sample."""
    news = pl.read_parquet(root / "runs" / "text" / "news.parquet")
    told = news.filter(pl.col("news_count") > 0)
    assert told.height > 10_000 and told["news_sent"].is_not_null().all()
    assert news.filter(pl.col("news_count") == 0)["news_sent"].is_null().all()
    results = json.loads((root / "runs" / "text" / "wf" / "results.json").read_text())
    assert _finite(results["rank_ic"]) and results["rank_ic"] > 0, results
    assert re.search(r"lm \(lm-\d-[0-9a-f]{12}\): \d+ scores written", ran.stdout)


def check_jobs(ran: Ran, root: Path) -> None:
    lines = ran.stdout.splitlines()
    last = max(i for i, line in enumerate(lines) if line == "{")  # `jobs show --json`
    job = json.loads("\n".join(lines[last:]))
    assert job["status"] == "succeeded", job
    assert [a["outcome"] for a in job["attempts"]] == ["succeeded"]
    assert re.search(r"^Rank IC +[-+]?\d", ran.stdout, re.M)  # the workflow's results, followed


def check_data_service(ran: Ran, root: Path) -> None:
    """Reads through the service (a mirror, and Flight) are the store's own reads."""
    from quarry.data import Store, read_bars

    (as_of,) = set(ran.block.option("as-of"))
    expected = read_bars(Store(root / "runs" / "demo" / "store"), ["close"], as_of=as_of)
    assert expected.height > 0
    assert_frame_equal(pl.read_parquet(root / "close.parquet"), expected)
    assert f"({expected.height}, 3)" in ran.stdout, ran.stdout  # Flight's frame, printed
    assert re.search(r"^warmed demo: [\d,]+ rows, fetched", ran.stdout, re.M), ran.stdout
    # the owner's audit log: the warm-up, the mirror's listing and its files, Flight's streams
    for route in (" bars ", " files ", " file ", "(flight"):
        assert route in ran.stdout, (route, ran.stdout)


def check_models(ran: Ran, root: Path) -> None:
    # the three example workflows register one model; its champion was moved by the gate
    assert "alpha158_lightgbm" in ran.stdout
    assert "champion" in ran.stdout and "gate" in ran.stdout, ran.stdout  # who moved it


def check_minutes(ran: Ran, root: Path) -> None:
    # the vendor's New York times are stored in UTC: the read's five minutes are the file's
    vendor = pl.read_csv(REPO / "examples" / "data" / "minute_bars.csv").with_columns(
        pl.col("date").str.to_datetime(time_zone="UTC")
    )
    start = datetime.fromisoformat(ran.block.option("start")[0])
    end = datetime.fromisoformat(ran.block.option("end")[0])
    read = pl.read_parquet(root / ran.block.option("out")[0])
    want = vendor.filter(pl.col("date").is_between(start, end)).sort("instrument", "date")
    assert read.height == want.height > 0
    assert read["date"].to_list() == want["date"].to_list()
    signal = pl.read_parquet(root / ran.block.option("out")[1])
    assert signal.schema["date"] == pl.Datetime("us", "UTC")
    assert signal["date"].min() >= datetime.fromisoformat(ran.block.option("start")[1])
    out = root / ran.block.option("out")[2]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frequency"] == "intraday" and metrics["traded"], metrics
    bars_a_day = vendor.group_by(pl.col("date").dt.date().alias("day")).agg(
        pl.col("date").n_unique()
    )
    assert metrics["periods_per_year"] == 252 * bars_a_day["date"].max()
    net = pl.read_parquet(out / "returns.parquet")["return_net"].to_numpy()
    periods = metrics["periods_per_year"]
    assert metrics["annualized_return"] == pytest.approx(
        empyrical.annual_return(net, annualization=periods)
    )
    assert metrics["sharpe"] == pytest.approx(empyrical.sharpe_ratio(net, annualization=periods))


def check_stream(ran: Ran, root: Path) -> None:
    health = json.loads(ran.stdout[ran.stdout.index("{") :])
    days = 87  # the demo market's trading days from 2020-03-02 to 2020-06-30
    assert health["bars"] == health["scored"] == days, health
    assert health["dead_letters"] == 0 and health["model_version"] >= 1, health
    import sqlite3

    with sqlite3.connect(root / "live-out" / "stream.db") as db:
        held = db.execute(
            "SELECT COUNT(*) FROM positions WHERE bar_time = (SELECT MAX(bar_time) FROM positions)"
        ).fetchone()[0]
    assert held == 20  # TopK-Dropout's topk


Check = Callable[[Ran, Path], None]
CHECKS: dict[str, Check] = {  # a block is recognised by what it runs
    "quarry data read --store ./store ": check_data,
    "quarry features compute --store ./store ": check_features,
    "quarry train ": check_train,
    "quarry search ": check_search,
    "quarry run --executor ray ": check_ray_run,
    "quarry backtest --store ./store ": check_backtest,
    "quarry data ingest bars examples/data/minute_bars.csv ": check_minutes,
    "from quarry.data import": check_python,
    "quarry run examples/workflows/": check_workflows,
    "quarry data score --store runs/text/store ": check_text,
    "quarry jobs submit ": check_jobs,
    "quarry datasets add ": check_data_service,
    "quarry models show ": check_models,
    "quarry stream run ": check_stream,
}


@pytest.mark.slow
def test_readme_blocks_run_verbatim_after_make_demo(tmp_path: Path) -> None:
    blocks = readme_blocks()
    assert "make demo" in blocks[0].text and "make test" in blocks[0].text
    blocks = blocks[1:]
    root = tmp_path / "repo"
    root.mkdir()
    (root / ".venv").symlink_to(REPO / ".venv")
    (root / "examples").symlink_to(REPO / "examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUARRY_", "AWS_"))}
    env["QUARRY_HOME"] = str(root / "home")
    demo = subprocess.run(["bash", "-c", demo_store_command()], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert demo.returncode == 0, demo.stderr
    for block in blocks:
        for port in block.option("port"):
            assert _port_free(int(port)), f"port {port} is taken: README.md:{block.line} needs it"

    checked: set[str] = set()
    for index, block in enumerate(blocks):
        ran = _run_block(block, index, root, env)
        where = f"README.md:{block.line} ({block.lang} block)"
        print(f"{where}: {ran.seconds:.1f}s")  # shown with -s: the README's cost, block by block
        assert ran.code is not None, f"{where} did not end in {BLOCK_TIMEOUT:.0f}s\n{ran.stderr}"
        assert ran.code == 0, f"{where} exited {ran.code}\n{ran.stdout[-3000:]}\n{ran.stderr}"
        for stream in (ran.stdout, ran.stderr):
            for fatal in ("Traceback", "internal error"):
                assert fatal not in stream, f"{where} printed {fatal!r}\n{stream}"
            bad = [line for line in stream.splitlines() if "warning" in line.lower()]
            assert not bad, f"{where} printed a warning: {bad}"
        assert not ran.left_running, f"{where} left processes running"
        for marker, check in CHECKS.items():
            if marker in block.text:
                check(ran, root)
                checked.add(marker)
    assert checked == set(CHECKS), f"README.md has no block running {set(CHECKS) - checked}"
