"""What PROPFIND reads beyond the entry: dead properties and content checksums.

Both are sealed under the node's key. Each is read per node (``get_props``, ``hashes``) or for
every member of a directory from one query (``list_dir_props``, ``list_dir_hashes``: a Depth 1
allprop PROPFIND needs them all); ``set_props`` changes properties in one transaction, within
the caps ``VaultSettings.max_dead_props`` and ``max_dead_props_bytes`` (``PropertyLimit``, 507).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from davserver import crypto
from davserver.errors import IntegrityError, PropertyLimit
from davserver.index import fast
from davserver.index.models import DeadProps, Node, Version
from davserver.vault import perms as _perms
from davserver.vault.nodes import (
    _VMETA_LABEL,
    _VMETA_PURPOSE,
    DIR,
    FILE,
    _b,
    _Ref,
    _SessionCore,
    split_path,
)

log = logging.getLogger(__name__)

_PROPS_PURPOSE, _PROPS_LABEL = b"wdv-props-v1", b"wdv/props/v1"
# What opening a member's name and key needs (batched member queries select these).
_MEMBER_KEY_COLUMNS = (
    Node.id,
    Node.parent.alias("parent_id"),
    Node.kind,
    Node.key_env,
    Node.name_ct,
)


def _props_bytes(props: dict[str, str]) -> int:
    """What the caps count: UTF-8 bytes of every property's name and value."""
    return sum(
        len(k.encode("utf-8", "surrogatepass")) + len(v.encode("utf-8", "surrogatepass"))
        for k, v in props.items()
    )


class _PropOps(_SessionCore):
    """Dead properties and checksums of nodes (``Session`` inherits these)."""

    # -- dead properties ---------------------------------------------------------------------
    def get_props(self, path: str) -> dict[str, str]:
        """All dead properties of a node: {property name: value (XML text)}. An upload-only
        session sees none (it may stat a directory, not read what is stored on it)."""
        with self._db():
            ref = self._walk(split_path(path))
            if not _perms.allowed(self.perms, _perms.READ):
                self._may(_perms.STAT, kind=ref.row.kind)
                return {}
            return self._props(ref)

    def set_props(self, path: str, changes: dict[str, str | None]) -> None:
        """Set (value) or remove (None) dead properties, all in one transaction."""
        self._may(_perms.CHANGE)
        with self._db(), self._txn():
            ref = self._walk(split_path(path))
            props = self._props(ref)
            before = (len(props), _props_bytes(props))
            for k, v in changes.items():
                if v is None:
                    props.pop(k, None)
                else:
                    props[k] = v
            self._check_props_limits(before, props)
            self._store_props(ref, props)
            # A directory's own properties count as a change of it (its ETag), a file's
            # as a change of its directory (the file's ETag is its version).
            where = ref.row.id if ref.row.kind == DIR else ref.row.parent_id
            if where is not None:
                fast.propagate(where)

    def _check_props_limits(self, before: tuple[int, int], props: dict[str, str]) -> None:
        """``PropertyLimit`` if a change grows the properties past a cap (a change that
        shrinks them is always allowed, even on a node above the caps)."""
        settings = self.vault.settings
        count, size = len(props), _props_bytes(props)
        if count > settings.max_dead_props and count > before[0]:
            raise PropertyLimit(
                f"too many dead properties (at most {settings.max_dead_props} per resource)"
            )
        if size > settings.max_dead_props_bytes and size > before[1]:
            raise PropertyLimit(
                f"dead properties too large (at most {settings.max_dead_props_bytes} bytes "
                "per resource)"
            )

    def list_dir_props(self, path: str) -> dict[str, dict[str, str] | None]:
        """Dead properties of every member of a directory that has any, from one query:
        {member name: {property: value}} (a Depth 1 allprop PROPFIND needs them all).

        A member whose key or properties fail authentication (logged) maps to None; one
        whose name fails is left out (``list_dir`` reports it as damaged)."""
        self._may(_perms.READ)
        with self._db():
            ref, rows = self._members_with(
                path, DeadProps, DeadProps.node == Node.id, DeadProps.props_ct
            )
            out: dict[str, dict[str, str] | None] = {}
            r: Any
            for r in rows:
                try:
                    name = self._entry_name(r, ref.key)
                except IntegrityError:
                    continue
                try:
                    child = _Ref(r, self._node_key(r, ref.key), ref.key, name)
                    out[name] = self._open_props(child, bytes(r.props_ct))
                except IntegrityError:
                    out[name] = None
            return out

    def _members_with(self, path: str, model: Any, on: Any, *columns: Any) -> tuple[_Ref, Any]:
        """A directory and, from one query, its members joined with ``model`` on ``on``
        (members without a matching row are left out), as named tuples of the member-key
        columns and ``columns``."""
        ref = self._dir(path)
        rows = (
            Node.select(*_MEMBER_KEY_COLUMNS, *columns)
            .join(model, on=on)
            .where(Node.parent == ref.row.id, Node.owner == self.user_id)
            .namedtuples()
        )
        return ref, rows

    def _props(self, ref: _Ref) -> dict[str, str]:
        row = DeadProps.get_or_none(DeadProps.node == ref.row.id)
        if row is None:
            return {}
        return self._open_props(ref, bytes(row.props_ct))

    def _open_props(self, ref: _Ref, sealed: bytes) -> dict[str, str]:
        try:
            raw = crypto.open_sealed(
                ref.key, _PROPS_PURPOSE, _PROPS_LABEL, (_b(ref.row.id),), sealed
            )
        except crypto.AuthenticationFailed as exc:
            log.error("integrity failure: properties of node %s", ref.row.id)
            raise IntegrityError("properties failed authentication") from exc
        value: dict[str, str] = json.loads(raw)
        return value

    def _store_props(self, ref: _Ref, props: dict[str, str]) -> None:
        if not props:
            DeadProps.delete().where(DeadProps.node == ref.row.id).execute()
            return
        ct = crypto.seal(
            ref.key,
            _PROPS_PURPOSE,
            _PROPS_LABEL,
            (_b(ref.row.id),),
            json.dumps(props, separators=(",", ":")).encode(),
        )
        DeadProps.insert(node=ref.row.id, props_ct=ct).on_conflict(
            conflict_target=[DeadProps.node], update={DeadProps.props_ct: ct}
        ).execute()

    def _copy_props(self, src: _Ref, dst: _Ref) -> None:
        props = self._props(src)
        if props:
            self._store_props(dst, props)

    # -- checksums ---------------------------------------------------------------------------
    def hashes(self, path: str) -> dict[str, str]:
        """{"sha1": hex, "md5": hex} of the current version's plaintext ({} for directories)."""
        self._may(_perms.READ)
        with self._db():
            ref = self._walk(split_path(path))
            if ref.row.kind != FILE or ref.row.current_version is None:
                return {}
            v = Version.get_or_none(Version.id == ref.row.current_version)
            if v is None or v.meta_ct is None:
                return {}
            return self._open_hashes(ref.key, ref.row.id, v.version_no, v.blob_id, bytes(v.meta_ct))

    def list_dir_hashes(self, path: str) -> dict[str, dict[str, str] | None]:
        """SHA-1 and MD5 of every file in a directory, from one query:
        {member name: {"sha1": hex, "md5": hex}}; None (logged) for a member whose key or
        checksums fail authentication, nothing for one whose name fails."""
        self._may(_perms.READ)
        with self._db():
            ref, rows = self._members_with(
                path,
                Version,
                Version.id == Node.current_version,
                Version.version_no,
                Version.blob_id,
                Version.meta_ct.alias("vmeta"),
            )
            out: dict[str, dict[str, str] | None] = {}
            r: Any
            for r in rows:
                if r.vmeta is None:
                    continue
                try:
                    name = self._entry_name(r, ref.key)
                except IntegrityError:
                    continue
                try:
                    key = self._node_key(r, ref.key)
                    sealed = bytes(r.vmeta)
                    out[name] = self._open_hashes(key, r.id, r.version_no, r.blob_id, sealed)
                except IntegrityError:
                    out[name] = None
            return out

    def _open_hashes(
        self, key: bytes, node_id: str, version_no: int, blob_id: str, sealed: bytes
    ) -> dict[str, str]:
        try:
            raw = crypto.open_sealed(
                key, _VMETA_PURPOSE, _VMETA_LABEL, (_b(node_id), version_no, _b(blob_id)), sealed
            )
        except crypto.AuthenticationFailed as exc:
            log.error("integrity failure: version metadata of node %s", node_id)
            raise IntegrityError("version metadata failed authentication") from exc
        value: dict[str, str] = json.loads(raw)
        return value
