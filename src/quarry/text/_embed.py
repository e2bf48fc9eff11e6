"""WordLlama's sentence embedding: 256 numbers a text, the average of its tokens' vectors.

WordLlama (``l2_supercat``, 256 dimensions: the library's defaults) is a token embedding
table distilled from large language models, with Llama 2's tokenizer; both ship inside the
wordllama wheel. They are loaded from there and nowhere else: ``cache_dir`` is the package's
own directory (never ``~/.cache/wordllama``) and ``disable_download`` makes a missing file
an error instead of a download from Hugging Face. With both files present, wordllama's
``load`` reaches no network: its only fallbacks (``requests.get`` for a missing weights or
tokenizer file, ``Tokenizer.from_pretrained`` for a missing tokenizer) run only when a file
is absent, which is checked here first.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from quarry.exceptions import UsageError
from quarry.text._packages import missing, version

__all__ = ["Embedder", "embedder"]

PACKAGE = "wordllama"
USER = "the text embedding"  # who needs the package, in messages
CONFIG = "l2_supercat"
DIM = 256
TOKENIZER = f"{CONFIG}_tokenizer_config.json"
# A batch of texts is padded to its longest text, and WordLlama holds (texts, tokens, 256)
# float32 twice while pooling: 8192 characters a batch (about 130 headlines, 2,000-8,000
# tokens) keep that under 20 MB, and were the fastest of 2k-64k on 100k headlines
# (tokenising, not the arithmetic, takes most of the time).
BATCH_CHARS = 1 << 13


def _import_wordllama() -> Any:
    """wordllama, imported without its side effect on logging: its modules call
    ``logging.basicConfig(level=INFO)``, which would otherwise print every library's INFO
    records on stderr for the rest of the process."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        import wordllama
    except ImportError:
        raise missing(USER, PACKAGE) from None
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return wordllama


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Embedder:
    """Texts to L2-normalised float32 vectors of ``dim`` (256) numbers, with WordLlama.

    Made by ``embedder()``, once per process. ``version`` names the package and the weights
    (``wordllama-<package version>-<12 hex of the weights' SHA-256>``): a vector stored with
    one version is comparable only with vectors of the same version.
    """

    dim = DIM

    def __init__(self) -> None:
        spec = importlib.util.find_spec(PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise missing(USER, PACKAGE)
        home = Path(next(iter(spec.submodule_search_locations)))
        wordllama = _import_wordllama()
        weights = home / "weights" / wordllama.WordLlama.get_filename(CONFIG, DIM)
        tokenizer = home / "tokenizers" / TOKENIZER
        for path in (weights, tokenizer):
            if not path.is_file():
                # wordllama would download it; we never do (the wheel ships both files)
                raise UsageError(
                    f"the embedding needs {path}, which this installation of wordllama lacks: "
                    "pip install --force-reinstall 'quarry[text]'"
                )
        self.version = f"wordllama-{version(USER, PACKAGE)}-{_sha256(weights)[:12]}"
        self.weights = weights
        self._model = wordllama.WordLlama.load(
            config=CONFIG, dim=DIM, cache_dir=home, disable_download=True
        )

    def embed(self, texts: Sequence[str | None], *, batch_chars: int = BATCH_CHARS) -> np.ndarray:
        """The vectors of ``texts``: float32, shape (len(texts), 256), each row of unit length
        (a text with no tokens, None or empty, has the zero row).

        Texts are embedded in batches of similar length (about ``batch_chars`` characters a
        batch, padding included), so memory stays bounded whatever the number of texts and
        a long text pads only its neighbours in length; a row does not depend on the batch.
        """
        strings = [text or "" for text in texts]
        out = np.zeros((len(strings), DIM), dtype=np.float32)
        for rows in _batches(strings, batch_chars):
            batch = [strings[i] for i in rows]
            out[rows] = self._model.embed(batch, norm=False, batch_size=len(batch))
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out

    def __repr__(self) -> str:
        return f"Embedder({self.version!r}, dim={self.dim})"


def _batches(texts: list[str], budget: int) -> Iterator[np.ndarray]:
    """Row numbers of ``texts`` in batches, shortest texts first, each batch's count times
    its longest text at most ``budget`` characters (a longer text is a batch of its own)."""
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    order = np.argsort(lengths, kind="stable")
    start = 0
    for end in range(1, len(order) + 1):
        # sorted, so the newest text is the batch's longest
        if end - start > 1 and (end - start) * max(int(lengths[order[end - 1]]), 1) > budget:
            yield order[start : end - 1]
            start = end - 1
    if start < len(order):
        yield order[start:]


@functools.cache
def embedder() -> Embedder:
    """The process's ``Embedder``: WordLlama's weights are read once (about 0.2 s)."""
    return Embedder()
