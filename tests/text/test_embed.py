"""WordLlama's embedding: unit rows, the same whatever the batching, nothing downloaded."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from quarry.exceptions import UsageError
from quarry.text import Embedder, embedder

HEADLINES = [
    "Apple shares rise after strong quarterly earnings",
    "Apple stock climbs on solid quarterly results",
    "Heavy rain floods city streets overnight",
    "Central bank raises interest rates by a quarter point",
    "Fed hikes rates 25 basis points",
    "Local team wins the championship final",
    "",
    "A much longer story: " + "the company said revenue grew in every region " * 40,
    "Ölpreis steigt; 原油价格上涨 📈",
    "x",
]


def test_rows_are_unit_float32_vectors_of_256() -> None:
    e = embedder()
    vectors = e.embed(HEADLINES)
    assert isinstance(e, Embedder) and e.dim == 256
    assert vectors.dtype == np.float32 and vectors.shape == (len(HEADLINES), 256)
    norms = np.linalg.norm(vectors, axis=1)
    empty = [i for i, t in enumerate(HEADLINES) if not t]
    np.testing.assert_allclose(np.delete(norms, empty), 1.0, atol=1e-6)
    np.testing.assert_array_equal(vectors[empty], 0.0)  # no tokens: the zero row
    np.testing.assert_array_equal(e.embed([None, ""]), 0.0)
    assert e.embed([]).shape == (0, 256)


def test_each_row_is_wordllamas_own_normalised_embedding_of_its_text() -> None:
    e = embedder()
    texts = [t for t in HEADLINES if t]
    own = np.vstack([e._model.embed([t], norm=True) for t in texts])
    np.testing.assert_allclose(e.embed(texts), own, rtol=0, atol=1e-6)


def test_the_same_texts_give_the_same_vectors_however_they_are_batched() -> None:
    e = embedder()
    texts = HEADLINES * 7
    whole = e.embed(texts)
    np.testing.assert_array_equal(e.embed(texts), whole)  # deterministic
    np.testing.assert_array_equal(e.embed(texts, batch_chars=1), whole)  # a text a batch
    np.testing.assert_array_equal(e.embed(texts, batch_chars=200), whole)
    pieces = np.vstack([e.embed(texts[i : i + 9]) for i in range(0, len(texts), 9)])
    np.testing.assert_array_equal(pieces, whole)


def test_similar_headlines_are_closer_than_unrelated_ones() -> None:
    v = embedder().embed(HEADLINES[:6])
    cos = v @ v.T
    assert cos[0, 1] > cos[0, 2] + 0.2  # Apple results: each other, not the weather
    assert cos[3, 4] > max(cos[3, 2], cos[3, 5])  # the rate rise, said twice


def test_embedder_is_made_once_and_names_its_weights() -> None:
    e = embedder()
    assert embedder() is e
    assert e.version == (
        f"wordllama-{importlib.metadata.version('wordllama')}-"
        f"{hashlib.sha256(e.weights.read_bytes()).hexdigest()[:12]}"
    )
    assert re.fullmatch(r"wordllama-.+-[0-9a-f]{12}", e.version)


def test_making_it_leaves_logging_as_it_was(fresh: None) -> None:
    # wordllama's modules call logging.basicConfig(level=INFO) when first imported
    code = (
        "import logging, sys\n"
        "from quarry.text import embedder\n"
        "embedder()\n"
        "print('wordllama' in sys.modules, logging.getLogger().handlers, "
        "logging.getLogger().level)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "[]", str(logging.WARNING)]


# In a fresh process: wordllama's ways to the network (requests for a missing file,
# Tokenizer.from_pretrained for a missing tokenizer) are replaced by recorders, the weights and
# tokenizer it opens are recorded, and an audit hook refuses any Python socket that
# would reach out (connect, name lookups, send).
# HOME is an empty directory, so ~/.cache/wordllama cannot be what is read.
NO_NETWORK = """
import json, sys
attempts, opened = [], []

# what reaches another machine (urllib3's import makes and binds a socket on ::1 to see
# whether IPv6 works, which goes nowhere)
OUTWARD = {"socket.connect", "socket.getaddrinfo", "socket.gethostbyname",
           "socket.gethostbyname_ex", "socket.sendto", "socket.sendmsg"}

def audit(event, args):
    if event in OUTWARD:
        attempts.append(event)
        raise OSError(f"no network in this test: {event}")

sys.addaudithook(audit)

import wordllama.wordllama as wl

class Requests:
    RequestException = Exception
    def __getattr__(self, name):
        attempts.append(f"requests.{name}")
        raise OSError("no downloads in this test")

class Tokenizer:
    @staticmethod
    def from_file(path):
        opened.append(str(path))
        return REAL_TOKENIZER.from_file(path)

    @staticmethod
    def from_pretrained(*args, **kwargs):
        attempts.append("Tokenizer.from_pretrained")
        raise OSError("no downloads in this test")

def safe_open(path, *args, **kwargs):
    opened.append(str(path))
    return REAL_SAFE_OPEN(path, *args, **kwargs)

REAL_TOKENIZER, REAL_SAFE_OPEN = wl.Tokenizer, wl.safe_open
wl.requests, wl.Tokenizer, wl.safe_open = Requests(), Tokenizer, safe_open

from quarry.text import embedder
vector = embedder().embed(["Profit rises"])[0]
print(json.dumps({"attempts": attempts, "opened": opened, "norm": float((vector**2).sum())}))
"""


def _run(argv: list[str], home: Path) -> dict[str, object]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "PYTHONPATH": str(Path.cwd() / "src")}
    out = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_loading_reads_the_wheels_files_and_reaches_no_network(tmp_path: Path) -> None:
    result = _run([sys.executable, "-c", NO_NETWORK], tmp_path)
    assert result["attempts"] == []
    package = Path(str(importlib.metadata.distribution("wordllama").locate_file("wordllama")))
    opened = [Path(p) for p in result["opened"]]  # type: ignore[attr-defined]
    assert sorted(p.name for p in opened) == [
        "l2_supercat_256.safetensors",
        "l2_supercat_tokenizer_config.json",
    ]
    assert all(p.resolve().is_relative_to(package.resolve()) for p in opened), opened
    assert result["norm"] == pytest.approx(1.0)


def _no_network_namespace() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    probe = subprocess.run([unshare, "-rn", "true"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _no_network_namespace(), reason="no user network namespaces here")
def test_loading_works_on_a_machine_without_a_network(tmp_path: Path) -> None:
    # a network namespace of its own with no interface up: a download could not even resolve
    result = _run(["unshare", "-rn", sys.executable, "-c", NO_NETWORK], tmp_path)
    assert result["attempts"] == [] and result["norm"] == pytest.approx(1.0)


def test_a_wheel_without_its_weights_is_a_usage_error_not_a_download(
    fresh: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import wordllama.wordllama as wl

    # WordLlama looks for weights named after the config; name a file that is not there
    monkeypatch.setattr(wl.WordLlama, "get_filename", staticmethod(lambda *a, **k: "gone.st"))
    monkeypatch.setattr(wl, "requests", None)  # a download attempt would fail loudly
    with pytest.raises(UsageError, match=r"gone\.st, which this installation of wordllama"):
        embedder()
