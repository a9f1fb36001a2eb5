"""The ``davserver`` command line: one click group, and one module per command family.

It parses arguments, reads passwords (from a prompt asked twice, or one line per password from
standard input — never from argv), and calls ``runtime`` / ``vault`` / ``admin``. It holds no
SQL and no crypto. Errors are one line on stderr and an exit code, never a traceback (the codes
are in ``davserver.cli.common``).

Every command module registers its commands on ``main`` when imported; ``COMMAND_MODULES``
below is the table of them.
"""

from __future__ import annotations

import importlib

import click

from davserver import __version__
from davserver.cli.common import EXIT_CODES_HELP

# The modules whose commands ``davserver`` has, in the order ``--help`` should read.
COMMAND_MODULES = (
    "davserver.cli.basic",  # init, user add|passwd|list|del, serve
    "davserver.cli.backup",  # gc, backup, restore, index migrate
    "davserver.cli.fsck",  # fsck, scrub
    "davserver.cli.quota",  # user quota
    "davserver.cli.locks",  # locks list|break
    "davserver.cli.audit",  # audit tag
    "davserver.cli.history",  # trash list|restore|purge, versions list|restore
    "davserver.cli.tokens",  # token add|list|revoke, user recovery-code
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="davserver")
def main() -> None:
    """davserver: a WebDAV server that stores everything encrypted.

    Contents, file names and keys never reach the disk, the database or the object store in
    clear. Start with 'davserver init', add a user with 'davserver user add NAME', then
    'davserver serve'.
    """


for _name in COMMAND_MODULES:
    importlib.import_module(_name)

__all__ = ["main"]
