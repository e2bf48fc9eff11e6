"""``python -m quarry.cli``: the same as the ``quarry`` command."""

from quarry.cli._main import main

main()
