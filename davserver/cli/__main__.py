"""``python -m davserver.cli``: the same as the ``davserver`` command."""

from davserver.cli import main

main()
