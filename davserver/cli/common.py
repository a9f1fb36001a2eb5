"""What every ``davserver`` command shares: the data-directory option, loading the config,
reading passwords, the exit codes, ``--json`` output, progress bars and tables.

Exit codes (every command; ``--help`` of the group lists them):

====  ==========================================================================
0     done; for checking commands (fsck, scrub, …): nothing wrong was found
1     problems were found, or the operation failed (a message on stderr)
2     bad usage or configuration
3     the index database or the blob store could not be reached
130   interrupted
====  ==========================================================================

Progress and tables come from ``rich`` (a well-kept library for both; no hand-written
terminal code). Progress goes to stderr and only to a terminal, so ``--json`` output on
stdout stays clean for scripts.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from davserver.config import Config, load
from davserver.errors import ConfigError, DavServerError, StorageError

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_DATA_DIR = "./davserver-data"
CONFIG_NAME = "davserver.yaml"

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

EXIT_CODES_HELP = (
    "Exit codes: 0 done (nothing wrong found), 1 problems found or the operation failed, "
    "2 bad usage or configuration, 3 the index or the blob store could not be reached."
)


def data_dir_option(f: F) -> F:
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="DAVSERVER_DATA_DIR",
        default=DEFAULT_DATA_DIR,
        show_default=True,
        help="Data directory (also $DAVSERVER_DATA_DIR).",
    )(f)


def json_option(f: F) -> F:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print the result as JSON (for scripts)."
    )(f)


def fail(message: str, code: int = EXIT_PROBLEMS) -> NoReturn:
    click.echo(f"davserver: error: {message}", err=True)
    sys.exit(code)


def handle_errors(f: F) -> F:
    """Turn our exceptions into one line on stderr and an exit code (see the module)."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except ConfigError as exc:
            fail(exc.reason, EXIT_USAGE)
        except StorageError as exc:
            fail(exc.reason, EXIT_UNREACHABLE if exc.status == 503 else EXIT_PROBLEMS)
        except DavServerError as exc:
            fail(exc.reason, EXIT_PROBLEMS)
        except KeyboardInterrupt:
            fail("interrupted", 130)

    return wrapper  # type: ignore[return-value]


def load_config(data_dir: Path) -> Config:
    path = data_dir / CONFIG_NAME
    if not path.exists():
        raise ConfigError(
            f"{path} does not exist: run 'davserver init --data-dir {data_dir}' first"
        )
    return load(path, os.environ)


def read_stdin_password(what: str) -> str:
    line = sys.stdin.readline()
    if not line:
        raise ConfigError(f"expected the {what} on standard input")
    pw = line.rstrip("\r\n")
    if not pw:
        raise ConfigError(f"the {what} must not be empty")
    return pw


def ask_password(from_stdin: bool, what: str = "password") -> str:
    """An existing password, to unlock keys: one line of stdin, or a prompt asked once
    (not echoed). Never logged or printed."""
    if from_stdin:
        return read_stdin_password(what)
    value: str = click.prompt(what.capitalize(), hide_input=True, err=True)
    return value


def ask_new_password(from_stdin: bool, what: str = "password") -> str:
    if from_stdin:
        return read_stdin_password(what)
    while True:
        value: str = click.prompt(
            what.capitalize(), hide_input=True, confirmation_prompt=True, err=True
        )
        if value:
            return value
        click.echo("The password must not be empty.", err=True)


def emit_json(value: Any) -> None:
    """One JSON document on stdout."""
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def print_table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    title: str = "",
    whole: Sequence[str] = (),
) -> None:
    """A table on stdout (``rich``); right-aligns columns whose values are all numbers.
    Values of the columns named in ``whole`` are never folded (names to copy)."""
    from rich.console import Console
    from rich.table import Table

    rows = [list(r) for r in rows]
    table = Table(title=title or None, show_edge=False, header_style="bold")
    for i, name in enumerate(columns):
        numeric = bool(rows) and all(isinstance(r[i], int | float) for r in rows)
        # Fold long values (tokens, ids) onto more lines rather than cut them: an operator
        # copies them into the next command. Headers and short words (times, sizes,
        # "(default)") stay whole: a narrow terminal squeezes the long values first.
        words = [len(w) for r in rows for w in str("" if r[i] is None else r[i]).split()]
        cap = None if name in whole else 20
        width = max([len(name), *(n for n in words if cap is None or n <= cap)])
        table.add_column(
            name, justify="right" if numeric else "left", overflow="fold", min_width=width
        )
    for r in rows:
        table.add_row(*("" if v is None else str(v) for v in r))
    Console(soft_wrap=True).print(table)


class Progress:
    """A progress bar on stderr while a command walks the store (``rich``); silent when
    stderr is not a terminal or ``enabled`` is false (``--json``)."""

    def __init__(self, description: str, total: int | None, enabled: bool = True) -> None:
        self._bar: Any = None
        self._task: Any = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(description, total=total)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


@contextmanager
def progress(description: str, total: int | None, enabled: bool = True) -> Iterator[Progress]:
    bar = Progress(description, total, enabled)
    try:
        yield bar
    finally:
        bar.close()
