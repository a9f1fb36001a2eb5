"""``davserver trash list|restore|purge`` and ``davserver versions list|restore``: undo from
the command line.

Trash items and versions are encrypted with the user's keys, so listing, restoring and
purging by name need the user's password (asked once, or one line of ``--password-stdin``,
as ``user passwd`` reads it). One admin command needs none: ``trash purge NAME
--older-than DURATION`` removes by deletion time alone (``Vault.purge_trash``).

Selecting trash items (``restore`` and ``purge``): ITEM names (the trash names ``trash
list`` shows), ``--since``/``--until`` (deletion time, inclusive, to the second) and ``--path`` (the
original location: that path and everything that was below it). Everything given must
match. ``restore`` brings items back shallowest original location first, so a folder is
back before the files that were deleted from it earlier, and those land inside it again;
one item that fails is reported and the others are still restored (exit code 1).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import click

from davserver.cli import main
from davserver.cli.backup import database_errors
from davserver.cli.common import (
    EXIT_CODES_HELP,
    EXIT_PROBLEMS,
    EXIT_USAGE,
    ask_password,
    data_dir_option,
    emit_json,
    fail,
    handle_errors,
    json_option,
    load_config,
    print_table,
    progress,
)
from davserver.cli.sizes import format_size, format_time, parse_when
from davserver.errors import AuthError, DavServerError, NotFound, RateLimited

if TYPE_CHECKING:
    from davserver.vault import Vault
    from davserver.vault.nodes import Entry
    from davserver.vault.tree import Session


class TrashLike(Protocol):
    """What this module reads of a trash item (the vault's ``TrashEntry``)."""

    @property
    def name(self) -> str: ...

    @property
    def original_location(self) -> str: ...

    @property
    def deleted_at(self) -> float: ...

    @property
    def entry(self) -> Any: ...


# --- selecting trash items -------------------------------------------------------------


def _when(text: str | None, option: str) -> float | None:
    if text is None:
        return None
    try:
        return parse_when(text)
    except ValueError as exc:
        usage(f"{option}: {exc}")


def usage(message: str) -> NoReturn:
    fail(message, EXIT_USAGE)


def clean_location(path: str) -> str:
    """A path as trash items name their original location: no leading or trailing slash."""
    return "/".join(p for p in path.replace("\\", "/").split("/") if p)


@dataclass(frozen=True)
class Selection:
    """Which trash items a command acts on; every part given must match."""

    names: tuple[str, ...] = ()
    since: float | None = None
    until: float | None = None
    prefix: str | None = None

    @property
    def everything(self) -> bool:
        return not self.names and self.since is None and self.until is None and not self.prefix

    def matches(self, item: TrashLike) -> bool:
        if self.names and item.name not in self.names:
            return False
        # To the second, as times are shown: --until with a time copied from 'trash list'
        # includes the item deleted in that second.
        when = math.floor(item.deleted_at)
        if self.since is not None and when < math.floor(self.since):
            return False
        if self.until is not None and when > math.floor(self.until):
            return False
        if self.prefix:
            loc = clean_location(item.original_location)
            if loc != self.prefix and not loc.startswith(self.prefix + "/"):
                return False
        return True

    def pick(self, items: Sequence[TrashLike]) -> tuple[list[TrashLike], list[str]]:
        """The matching items, and the ITEM names that are not in the trash at all."""
        chosen = [i for i in items if self.matches(i)]
        present = {i.name for i in items}
        return chosen, [n for n in self.names if n not in present]


def selection(
    names: Sequence[str], since: str | None, until: str | None, prefix: str | None
) -> Selection:
    lo, hi = _when(since, "--since"), _when(until, "--until")
    if lo is not None and hi is not None and lo > hi:
        usage("--since is later than --until: nothing could match")
    return Selection(tuple(names), lo, hi, clean_location(prefix) if prefix else None)


def restore_order(items: Sequence[TrashLike]) -> list[TrashLike]:
    """Shallowest original location first (a folder before what was deleted from it
    earlier, which then goes back into it); at one depth the latest deletion first, so that
    of two items from the same place the newer one gets the original name."""
    return sorted(
        items,
        key=lambda i: (
            len(clean_location(i.original_location).split("/")),
            -i.deleted_at,
            i.name,
        ),
    )


def selection_options(f: Any) -> Any:
    for option in reversed(
        (
            click.option(
                "--since",
                metavar="T",
                help="Only items deleted at or after T: 2026-12-01T10:00, 2026-12-01 "
                "(local time unless a zone is given: Z, +01:00) or a time ago: 30m, 2h, 7d.",
            ),
            click.option("--until", metavar="T", help="Only items deleted at or before T."),
            click.option(
                "--path",
                "prefix",
                metavar="PREFIX",
                help="Only items whose original location is PREFIX or was below it "
                "(Photos matches Photos and Photos/a.jpg, not Photos2).",
            ),
        )
    ):
        f = option(f)
    return f


password_stdin_option = click.option(
    "--password-stdin", is_flag=True, help="Read the user's password from one line of stdin."
)


# --- sessions ---------------------------------------------------------------------------


def open_session(vault: Vault, name: str, password_stdin: bool) -> Session:
    """Log in as NAME with the password from the prompt or stdin; a message and exit 1 for
    an unknown user or a wrong password."""
    try:
        vault.user_info(name)
    except NotFound:
        fail(f"no user named '{name}'")
    password = ask_password(password_stdin, f"password of '{name}'")
    try:
        return vault.login(name, password)
    except RateLimited:
        fail(f"too many failed logins for '{name}'; try again later")
    except AuthError:
        fail(f"wrong password for '{name}'")


def item_json(item: TrashLike) -> dict[str, Any]:
    entry = item.entry
    return {
        "name": item.name,
        "original_location": item.original_location,
        "deleted_at": format_time(item.deleted_at),
        "deleted_at_unix": item.deleted_at,
        "kind": entry.kind,
        "size": entry.size,
        "fileid": entry.fileid,
    }


def item_row(item: TrashLike) -> list[Any]:
    entry = item.entry
    return [
        item.name,
        item.original_location,
        format_time(item.deleted_at),
        entry.kind,
        "" if entry.is_dir else format_size(entry.size),  # a folder's own size says nothing
    ]


ITEM_COLUMNS = ["TRASH NAME", "ORIGINAL LOCATION", "DELETED (UTC)", "KIND", "SIZE"]


# --- trash ------------------------------------------------------------------------------


@main.group()
def trash() -> None:
    """List, restore and purge a user's deleted files (the trash)."""


@trash.command("list", epilog=EXIT_CODES_HELP)
@click.argument("name")
@selection_options
@password_stdin_option
@json_option
@data_dir_option
@handle_errors
@database_errors
def trash_list(
    name: str,
    since: str | None,
    until: str | None,
    prefix: str | None,
    password_stdin: bool,
    as_json: bool,
    data_dir: Path,
) -> None:
    """List the trash of user NAME: trash name, original location, deletion time (UTC),
    kind and size, newest deletion first. Needs the user's password."""
    from davserver.runtime import open_vault

    sel = selection((), since, until, prefix)
    vault = open_vault(load_config(data_dir))
    try:
        session = open_session(vault, name, password_stdin)
        items, _ = sel.pick(session.trash_items())
    finally:
        vault.close()
    items.sort(key=lambda i: (-i.deleted_at, i.name))
    if as_json:
        emit_json([item_json(i) for i in items])
        return
    if not items:
        click.echo("The trash is empty." if sel.everything else "Nothing in the trash matches.")
        return
    print_table(ITEM_COLUMNS, [item_row(i) for i in items], whole=ITEM_COLUMNS[:1])


@dataclass
class Outcome:
    item: TrashLike
    done: bool
    detail: str  # where it went, or why it failed

    def as_json(self, key: str) -> dict[str, Any]:
        out = item_json(self.item)
        out[key] = self.detail if self.done else None
        out["error"] = None if self.done else self.detail
        return out


def report(
    outcomes: list[Outcome],
    missing: list[str],
    as_json: bool,
    dry_run: bool,
    key: str,
    column: str,
) -> None:
    failed = [o for o in outcomes if not o.done]
    if as_json:
        emit_json(
            {
                "dry_run": dry_run,
                "items": [o.as_json(key) for o in outcomes],
                "missing": missing,
                "done": len(outcomes) - len(failed),
                "failed": len(failed) + len(missing),
            }
        )
    else:
        if outcomes:
            print_table(
                [*ITEM_COLUMNS, column],
                [
                    [*item_row(o.item), o.detail if o.done else f"FAILED: {o.detail}"]
                    for o in outcomes
                ],
                whole=ITEM_COLUMNS[:1],
            )
        for n in missing:
            click.echo(f"davserver: error: '{n}' is not in the trash", err=True)
        if failed:
            click.echo(
                f"davserver: error: {len(failed)} of {len(outcomes)} item(s) failed "
                "(the others are done)",
                err=True,
            )
        if not outcomes and not missing:
            click.echo("Nothing in the trash matches.")
    if failed or missing:
        raise SystemExit(EXIT_PROBLEMS)


@trash.command("restore", epilog=EXIT_CODES_HELP)
@click.argument("name")
@click.argument("items", nargs=-1)
@selection_options
@click.option("--dry-run", is_flag=True, help="Only show what would be restored.")
@password_stdin_option
@json_option
@data_dir_option
@handle_errors
@database_errors
def trash_restore(
    name: str,
    items: tuple[str, ...],
    since: str | None,
    until: str | None,
    prefix: str | None,
    dry_run: bool,
    password_stdin: bool,
    as_json: bool,
    data_dir: Path,
) -> None:
    """Restore trash items of user NAME: the ITEMs named, or every item matching --since,
    --until and --path (all of them if nothing is given) — one command undoes a mass
    delete.

    Items go back to their original location, shallowest first, so a folder is back before
    the files deleted from it earlier, which return into it. An item whose original folder
    is gone comes back at the top under a unique name. Prints where each item went; exit
    code 1 if any failed (the others are restored all the same).
    """
    from davserver.runtime import open_vault

    sel = selection(items, since, until, prefix)
    vault = open_vault(load_config(data_dir))
    outcomes: list[Outcome] = []
    try:
        session = open_session(vault, name, password_stdin)
        chosen, missing = sel.pick(session.trash_items())
        with progress("restoring", len(chosen), not (as_json or dry_run)) as bar:
            for item in restore_order(chosen):
                if dry_run:
                    where = "/" + clean_location(item.original_location)
                    outcomes.append(Outcome(item, True, where))
                    continue
                try:
                    outcomes.append(Outcome(item, True, session.trash_restore(item.name)))
                except DavServerError as exc:
                    outcomes.append(Outcome(item, False, exc.reason))
                bar.advance()
    finally:
        vault.close()
    report(
        outcomes,
        missing,
        as_json,
        dry_run,
        "restored_to",
        "WOULD RESTORE TO" if dry_run else "RESTORED TO",
    )


@trash.command("purge", epilog=EXIT_CODES_HELP)
@click.argument("name")
@click.argument("items", nargs=-1)
@selection_options
@click.option("--all", "everything", is_flag=True, help="Empty the whole trash.")
@click.option(
    "--older-than",
    metavar="DURATION",
    help="Admin, no password: purge every item deleted longer ago than DURATION "
    "(30d, 12h, 90m or seconds).",
)
@click.option("--dry-run", is_flag=True, help="Only show what would be purged.")
@password_stdin_option
@json_option
@data_dir_option
@handle_errors
@database_errors
def trash_purge(
    name: str,
    items: tuple[str, ...],
    since: str | None,
    until: str | None,
    prefix: str | None,
    everything: bool,
    older_than: str | None,
    dry_run: bool,
    password_stdin: bool,
    as_json: bool,
    data_dir: Path,
) -> None:
    """Delete trash items of user NAME for good: the ITEMs named, those matching --since,
    --until and --path, or --all. Needs the user's password.

    As an administrator, without the password: 'davserver trash purge NAME --older-than
    30d' removes everything deleted more than 30 days ago (names stay encrypted, so nothing
    else can be selected that way).
    """
    from davserver.runtime import open_vault

    if older_than is not None:
        if items or since or until or prefix or everything or dry_run or password_stdin:
            usage(
                "--older-than selects by age alone and needs no password; it cannot be "
                "combined with ITEMs, --since, --until, --path, --all, --dry-run or "
                "--password-stdin (to preview, use --until with the password)"
            )
        purge_older_than(name, older_than, as_json, data_dir)
        return
    sel = selection(items, since, until, prefix)
    if sel.everything and not everything:
        usage("name the ITEMs to purge, select them with --since/--until/--path, or give --all")
    if everything and not sel.everything:
        usage("--all empties the whole trash: it takes no ITEMs, --since, --until or --path")
    vault = open_vault(load_config(data_dir))
    outcomes: list[Outcome] = []
    try:
        session = open_session(vault, name, password_stdin)
        chosen, missing = sel.pick(session.trash_items())
        chosen.sort(key=lambda i: (i.deleted_at, i.name))
        if dry_run:
            outcomes = [Outcome(item, True, "would purge") for item in chosen]
        elif everything:
            session.trash_empty()  # one transaction (what was deleted since goes too)
            outcomes = [Outcome(item, True, "purged") for item in chosen]
        else:
            with progress("purging", len(chosen), not as_json) as bar:
                for item in chosen:
                    try:
                        session.trash_purge(item.name)
                        outcomes.append(Outcome(item, True, "purged"))
                    except DavServerError as exc:
                        outcomes.append(Outcome(item, False, exc.reason))
                    bar.advance()
    finally:
        vault.close()
    report(outcomes, missing, as_json, dry_run, "status", "STATUS")


def purge_older_than(name: str, older_than: str, as_json: bool, data_dir: Path) -> None:
    from davserver.admin.gc import parse_duration
    from davserver.runtime import open_vault

    seconds = parse_duration(older_than)
    vault = open_vault(load_config(data_dir))
    try:
        try:
            purged = vault.purge_trash(name, seconds)
        except NotFound:
            fail(f"no user named '{name}'")
    finally:
        vault.close()
    if as_json:
        emit_json({"user": name, "older_than_seconds": seconds, "purged": purged})
        return
    cutoff = format_time(time.time() - seconds)
    click.echo(f"Purged {purged} trash item(s) of '{name}' deleted before {cutoff}.")


# --- versions ---------------------------------------------------------------------------


@main.group()
def versions() -> None:
    """List and restore earlier versions of a user's file."""


def tree_path(path: str) -> str:
    return "/" + clean_location(path)


in_trash_option = click.option(
    "--in-trash",
    is_flag=True,
    help="PATH is in the trash: a trash name from 'trash list' (report.txt.d1764680400), "
    "or a path below one (Photos.d1764680400/a.jpg).",
)


@versions.command("list", epilog=EXIT_CODES_HELP)
@click.argument("name")
@click.argument("path")
@in_trash_option
@password_stdin_option
@json_option
@data_dir_option
@handle_errors
@database_errors
def versions_list(
    name: str, path: str, in_trash: bool, password_stdin: bool, as_json: bool, data_dir: Path
) -> None:
    """List the kept versions of PATH in the tree of user NAME, newest first (the current
    one included): version number, when it was made (UTC), size, label. Needs the
    user's password."""
    from davserver.runtime import open_vault

    path = tree_path(path)
    vault = open_vault(load_config(data_dir))
    try:
        session = open_session(vault, name, password_stdin)
        entry = file_entry(session, name, path, in_trash)
        _, kept = session.versions(entry.fileid)
    finally:
        vault.close()
    if as_json:
        emit_json(
            {
                "path": path,
                "fileid": entry.fileid,
                "versions": [
                    {
                        "version_no": v.version_no,
                        "created": format_time(v.created),
                        "mtime": format_time(v.mtime),
                        "size": v.size,
                        "label": v.label,
                        "current": v.current,
                        "etag": v.etag,
                    }
                    for v in kept
                ],
            }
        )
        return
    print_table(
        ["VERSION", "CREATED (UTC)", "MODIFIED (UTC)", "SIZE", "LABEL", ""],
        [
            [
                v.version_no,
                format_time(v.created),
                format_time(v.mtime),
                format_size(v.size),
                v.label or "",
                "current" if v.current else "",
            ]
            for v in kept
        ],
        title=path,
    )


def file_entry(session: Session, name: str, path: str, in_trash: bool = False) -> Entry:
    try:
        entry = session.trash_stat(path) if in_trash else session.stat(path)
    except NotFound:
        where = "the trash" if in_trash else "the tree"
        fail(f"no file {path} in {where} of '{name}'")
    if entry.is_dir:
        fail(f"{path} is a folder: only files have versions")
    return entry


@versions.command("restore", epilog=EXIT_CODES_HELP)
@click.argument("name")
@click.argument("path")
@click.argument("version_no", metavar="VERSION_NO", type=int)
@in_trash_option
@password_stdin_option
@json_option
@data_dir_option
@handle_errors
@database_errors
def versions_restore(
    name: str,
    path: str,
    version_no: int,
    in_trash: bool,
    password_stdin: bool,
    as_json: bool,
    data_dir: Path,
) -> None:
    """Make version VERSION_NO of PATH (see 'versions list') the current one again.

    The restored content becomes a new version; the one it replaces is kept as a version
    too, so a restore can itself be undone. Needs the user's password.
    """
    from davserver.runtime import open_vault

    path = tree_path(path)
    vault = open_vault(load_config(data_dir))
    try:
        session = open_session(vault, name, password_stdin)
        entry = file_entry(session, name, path, in_trash)
        try:
            restored = session.restore_version(entry.fileid, version_no)
        except NotFound:
            fail(f"{path} has no version {version_no} (see: davserver versions list {name} {path})")
        _, kept = session.versions(entry.fileid)
    finally:
        vault.close()
    current = next((v for v in kept if v.current), None)
    new_no = current.version_no if current is not None else None
    if as_json:
        emit_json(
            {
                "path": path,
                "fileid": entry.fileid,
                "restored_version_no": version_no,
                "current_version_no": new_no,
                "size": restored.size,
            }
        )
        return
    click.echo(
        f"Restored version {version_no} of {path} ({format_size(restored.size)}): "
        f"it is the current version now (number {new_no})."
    )
