"""``python -m cli``: the same as the ``elmsearch`` console script."""

from cli.app import main

main()
