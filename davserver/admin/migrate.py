"""``davserver index migrate``: move the index to another database (SQLite ⇄ PostgreSQL).

The source is read in one snapshot and copied table by table, in batches, parents first
(``davserver.index.copy``), into a target that must hold none of our rows; the copy is one
transaction there. Then the row counts of the target are compared with the source's in the
snapshot, and only if they all match is ``index.url`` in the config file rewritten — the old
file kept beside it as ``davserver.yaml.bak-<time>``. The blob store is not touched: it
does not depend on where the index lives.

Stop the server first: writes it makes after the snapshot would stay in the old index only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from davserver.config import Config, load, mask_url
from davserver.errors import ConfigError, StorageError
from davserver.index import connect, open_index
from davserver.index.copy import copy_index, count_rows, non_empty_tables, snapshot

OnTable = Callable[[str, int], Callable[[int], None]]


@dataclass
class MigrateResult:
    source: str  # masked URLs: no passwords
    target: str
    tables: dict[str, int]
    config_backup: Path

    def as_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "target": self.target,
            "tables": self.tables,
            "config_backup": str(self.config_backup),
        }


_INDEX_SECTION = re.compile(r"^index:[ \t]*(#.*)?$", re.M)
_URL_LINE = re.compile(r"^([ \t]+)url:.*$", re.M)
_TOP_LEVEL = re.compile(r"^\S", re.M)


def rewrite_index_url(text: str, url: str) -> str:
    """``text`` (a config file) with ``index.url`` set to ``url``; every other line, and
    the comments, unchanged. A file without an ``index`` section gets one appended."""
    value = json.dumps(url)  # a JSON string is a valid double-quoted YAML scalar
    m = _INDEX_SECTION.search(text)
    if m is None:
        return text.rstrip("\n") + f"\nindex:\n  url: {value}\n"
    end_m = _TOP_LEVEL.search(text, m.end() + 1)
    end = end_m.start() if end_m else len(text)
    section = text[m.end() : end]
    u = _URL_LINE.search(section)
    if u is None:
        section = f"\n  url: {value}" + section
    else:
        section = section[: u.start()] + f"{u.group(1)}url: {value}" + section[u.end() :]
    return text[: m.end()] + section + text[end:]


def migrate_index(
    config: Config, config_path: Path, to_url: str, on_table: OnTable | None = None
) -> MigrateResult:
    """Copy the index of ``config`` into the database ``to_url`` and point the config file
    at it (see the module docstring)."""
    if to_url == config.index.url:
        raise ConfigError("the target is the index in use")
    source_index = open_index(config.index.url, config.data_dir)  # brings it to SCHEMA_VERSION
    src = source_index.db
    dst = connect(to_url, config.data_dir)
    try:
        try:
            busy = non_empty_tables(dst)
        except Exception as exc:  # any driver error: unreachable
            raise StorageError(f"cannot reach the target database: {exc}") from exc
        if busy:
            raise ConfigError(
                f"the target index is not empty (tables {', '.join(busy)} hold rows); "
                "refusing to mix two indexes — give an empty database"
            )
        totals = copy_index(src, dst, on_table)
        with snapshot(dst):
            copied = count_rows(dst, list(totals))
        wrong = {t: (n, copied.get(t)) for t, n in totals.items() if copied.get(t) != n}
        if wrong:
            raise StorageError(
                "row counts differ after the copy: "
                + ", ".join(f"{t} {a} -> {b}" for t, (a, b) in wrong.items())
                + "; the config was not changed"
            )
    finally:
        dst.close()
        source_index.close()
    text = config_path.read_text(encoding="utf-8")
    backup = config_path.with_name(
        f"{config_path.name}.bak-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
    )
    shutil.copy2(config_path, backup)
    os.chmod(backup, 0o600)
    new_text = rewrite_index_url(text, to_url)
    tmp = config_path.with_name(config_path.name + ".part")
    tmp.write_text(new_text, encoding="utf-8")
    os.chmod(tmp, 0o600)
    load(tmp, {})  # it must still be a valid configuration
    os.replace(tmp, config_path)
    return MigrateResult(mask_url(config.index.url), mask_url(to_url), totals, backup)


__all__ = ["MigrateResult", "migrate_index", "rewrite_index_url"]
