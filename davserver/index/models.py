"""Peewee models of the index: the tree of encrypted nodes, their versions, users and envelopes.

What a row may hold in clear (DESIGN.md §2): random ids, tree shape (parent ids), kinds, sizes,
version numbers, blob ids, the first 24 header bytes of each blob, user names, timestamps of
bookkeeping (``created`` of rows). Everything else — names, modification times, hashes, dead
properties, keys — is ciphertext produced by ``davserver.crypto`` and bound to its row.

All ids are 32 lowercase hex characters (128 random bits), never sequential. The models are
bound to a database at run time through ``database_proxy`` (see ``davserver.index``).
"""

from __future__ import annotations

from typing import Any

import peewee as pw

database_proxy = pw.DatabaseProxy()

ID_LEN = 32


def IdField(**kw: Any) -> pw.CharField:  # noqa: N802 - reads like a field class
    return pw.CharField(max_length=ID_LEN, **kw)


class BaseModel(pw.Model):
    class Meta:
        database = database_proxy
        legacy_table_names = False


class SchemaInfo(BaseModel):
    """Key/value facts about the index itself; ``schema_version`` drives migrations."""

    key = pw.CharField(max_length=64, primary_key=True)
    value = pw.TextField()


class User(BaseModel):
    id = IdField(primary_key=True)
    name = pw.CharField(max_length=255, unique=True)
    root_id = IdField(null=True)
    created = pw.DoubleField()
    # Bytes of plaintext in current versions (sizes are not secret, DESIGN §2).
    usage_bytes = pw.BigIntegerField(default=0)
    # None: the server-wide default quota applies; 0: unlimited.
    quota_bytes = pw.BigIntegerField(null=True)
    #: Unix time of the last password login (written at most once a minute; schema v5).
    last_login = pw.DoubleField(null=True)
    #: The user's trash: a second parentless directory, created at the first DELETE that
    #: keeps what it deletes (schema v7). ``usage_bytes`` counts every version row of the
    #: user's nodes, in the tree and in the trash (old versions too).
    trash_id = IdField(null=True)
    #: The user's X25519 identity key pair (DESIGN §13; schema v10): the public key in clear,
    #: its pepper-keyed binding MAC (checked before every use), the secret key wrapped under
    #: ``subkey(MK, "id-wrap")``. Null until made (``create_user``, else the next password
    #: login of a user from before v8).
    id_pk = pw.BlobField(null=True)
    id_pk_mac = pw.BlobField(null=True)
    id_sk_env = pw.BlobField(null=True)


class Envelope(BaseModel):
    """One wrapping of a user's master key (by a password, a token or a recovery code) or
    of one directory's key (a scoped token); DESIGN §4 and §13.

    The token columns (schema v8) restate what the envelope's associated data binds, so
    that a keyless admin can list and expire tokens: a row edited to widen ``perms``,
    ``scope_node`` or ``expires`` no longer opens. ``label_ct`` is the user's name for the
    token ("Alice's phone"), sealed under a server key and bound to the envelope id.
    """

    id = IdField(primary_key=True)
    user = pw.ForeignKeyField(User, backref="envelopes", on_delete="CASCADE")
    user_id: str  # set by peewee for the foreign key above
    kind = pw.CharField(max_length=16)  # "password" | "token" | "scoped" | "recovery"
    kdf_params = pw.BlobField()
    verifier = pw.BlobField()
    wrapped = pw.BlobField()
    created = pw.DoubleField()
    label_ct = pw.BlobField(null=True)
    scope_node = IdField(null=True)  # a scoped token's directory (no foreign key: see v8)
    perms = pw.CharField(max_length=2, null=True)  # "rw" | "ro" | "wo"; None for passwords
    expires = pw.DoubleField(null=True)  # Unix time; None = never
    last_used = pw.DoubleField(null=True)  # written at most once a minute


class Node(BaseModel):
    """A directory or file. The root of a user's tree has no parent and no name."""

    id = IdField(primary_key=True)
    owner = pw.ForeignKeyField(User, backref="nodes", on_delete="CASCADE", index=True)
    parent = pw.ForeignKeyField("self", null=True, backref="children", on_delete="RESTRICT")
    parent_id: str | None  # set by peewee for the foreign key above
    kind = pw.CharField(max_length=4)  # "dir" | "file"
    name_mac = pw.BlobField()
    name_ct = pw.BlobField()
    key_env = pw.BlobField()
    # Encrypted under the parent's name keys with the name: modification time etc.
    meta_ct = pw.BlobField(null=True)
    current_version = IdField(null=True)
    size = pw.BigIntegerField(default=0)
    created = pw.DoubleField()
    #: A random positive 63-bit integer, unique, stable across renames and trash round
    #: trips: Nextcloud's FILEID and ``oc:fileid`` (schema v7; random, never sequential).
    fileid = pw.BigIntegerField(null=True, unique=True)

    class Meta:
        indexes = ((("parent", "name_mac"), True),)


class Version(BaseModel):
    """One stored, immutable version of a file's contents: a blob and its content key."""

    id = IdField(primary_key=True)
    node = pw.ForeignKeyField(Node, backref="versions", on_delete="CASCADE", index=True)
    version_no = pw.BigIntegerField()
    blob_id = IdField(index=True)
    plain_size = pw.BigIntegerField()
    header24 = pw.BlobField()
    ck_env = pw.BlobField()
    # SHA-1 and MD5 of the plaintext, sealed under the file key and bound to this version.
    meta_ct = pw.BlobField(null=True)
    created = pw.DoubleField()
    # BLAKE2b-256 of the whole ciphertext object, computed as it was uploaded (keyless: lets
    # ``davserver scrub`` find bit rot without any user's key); None for versions stored
    # before schema 5, until scrub records it. ``scrubbed_at``: when scrub last re-read it.
    digest = pw.BlobField(null=True)
    scrubbed_at = pw.DoubleField(null=True, index=True)
    #: Whether the user labelled this version (labelled versions are never thinned; the
    #: flag is in clear so that expiry needs no key), and the label, sealed (schema v7).
    labelled = pw.BooleanField(default=False)
    label_ct = pw.BlobField(null=True)

    class Meta:
        indexes = ((("node", "version_no"), True),)


class DeadProps(BaseModel):
    """All dead (client-set) WebDAV properties of one node, sealed under the node's key."""

    node = pw.ForeignKeyField(Node, primary_key=True, on_delete="CASCADE")
    props_ct = pw.BlobField()


class BlobGC(BaseModel):
    """Blobs that may need deleting: uploads in flight (to clean after a crash) and dead blobs.

    A blob is deleted only when no ``Version`` row references it any more (COPY shares blobs).
    """

    blob_id = IdField(primary_key=True)
    state = pw.CharField(max_length=16)  # "uploading" | "dead"
    since = pw.DoubleField()


class Lock(BaseModel):
    """A WebDAV lock, shared by every server process using this index.

    ``path_mac`` is a keyed MAC of the locked path (the path itself is sealed in ``data_ct``),
    so lock rows reveal no names; ``LockScope`` rows index every ancestor of the locked path
    so that "locks below this path" is one indexed query.
    """

    token = pw.CharField(max_length=128, primary_key=True)
    path_mac = pw.BlobField(index=True)
    data_ct = pw.BlobField()
    expire = pw.DoubleField(index=True)


class LockScope(BaseModel):
    lock = pw.ForeignKeyField(Lock, on_delete="CASCADE", backref="scopes")
    ancestor_mac = pw.BlobField(index=True)

    class Meta:
        primary_key = pw.CompositeKey("lock", "ancestor_mac")


class Upload(BaseModel):
    """A chunked upload in progress (Nextcloud-style ``/uploads/USER/<id>/``).

    ``handle_mac`` is a keyed MAC of the client's upload id under the user's upload key, so
    the client-chosen id (which may say anything) is not stored in clear.
    """

    id = IdField(primary_key=True)
    owner = pw.ForeignKeyField(User, backref="uploads", on_delete="CASCADE", index=True)
    handle_mac = pw.BlobField()
    created = pw.DoubleField()
    touched = pw.DoubleField(index=True)

    class Meta:
        indexes = ((("owner", "handle_mac"), True),)


class UploadChunk(BaseModel):
    """One uploaded chunk: an encrypted blob of its own, assembled into a version later."""

    id = IdField(primary_key=True)
    upload = pw.ForeignKeyField(Upload, backref="chunks", on_delete="CASCADE", index=True)
    name_mac = pw.BlobField()
    name_ct = pw.BlobField()
    blob_id = IdField(index=True)
    plain_size = pw.BigIntegerField()
    header24 = pw.BlobField()
    ck_env = pw.BlobField()
    created = pw.DoubleField()

    class Meta:
        indexes = ((("upload", "name_mac"), True),)


class DirVersion(BaseModel):
    """Schema 3 to 7 only: a counter per directory, bumped when its listing changed.
    Replaced by ``DirTree`` (schema 11 drops the table); kept so that migration 3 still
    creates what it always created."""

    dir_id = IdField(primary_key=True)
    version = pw.BigIntegerField()


class DirTree(BaseModel):
    """Per directory (the root and the trash root included): ``changes``, a counter that
    every change anywhere below it increments, and ``bytes``, the sizes of all files below
    it (their current versions) added up. Both are kept in the transaction of the change by
    one recursive statement over the ancestor chain (``fast`` ``propagate``).

    ``changes`` makes the directory's ETag (DESIGN §7: ``"<node id>-<changes>"``), which a
    sync client compares to know whether to descend; it also revalidates the in-memory
    listing caches, across processes. ``bytes`` is ``oc:size``. Kept out of ``node`` so
    that a MOVE still rewrites exactly one node row (plus these counters). Sizes and change
    counts are not secret (DESIGN §2: sizes and how often things change leak already)."""

    dir = pw.ForeignKeyField(Node, primary_key=True, on_delete="CASCADE", column_name="dir_id")
    dir_id: str  # set by peewee for the foreign key above
    changes = pw.BigIntegerField(default=0)
    bytes = pw.BigIntegerField(default=0)


class InlineBlob(BaseModel):
    """The ciphertext of a small blob (``storage.inline_max``), kept here instead of in the
    blob store: the same bytes, in the same blob format, under the same content key a stored
    object would have. Keyed like an object, so COPY shares it and the collector removes it
    when no version references its id any more."""

    blob_id = IdField(primary_key=True)
    data = pw.BlobField()
    digest = pw.BlobField(null=True)  # BLAKE2b-256 of ``data`` (as ``Version.digest``)


class LoginFailure(BaseModel):
    """One failed login against a key (a user name or a client address), as a keyed MAC;
    see davserver.vault.throttle. Shared by every server process on this index."""

    key_mac = pw.BlobField(index=True)
    at = pw.DoubleField(index=True)


class TrashItem(BaseModel):
    """A node moved into its owner's trash (a direct child of ``User.trash_id``).

    ``origin_ct`` seals where it came from (its original parent, name and deletion time,
    under the trash key, bound to the node); ``deleted_at`` repeats the time in clear so
    that expiry needs no key (bookkeeping times may be in clear, DESIGN §2)."""

    node = pw.ForeignKeyField(Node, primary_key=True, on_delete="CASCADE")
    node_id: str  # set by peewee for the foreign key above
    owner = pw.ForeignKeyField(User, backref="trash_items", on_delete="CASCADE", index=True)
    deleted_at = pw.DoubleField(index=True)
    origin_ct = pw.BlobField()
    #: The WebDAV locks that were on it and below it, sealed under the trash key: a
    #: restore puts them back (same tokens, same expiry) at the path it returns to.
    locks_ct = pw.BlobField(null=True)
    #: Deleted by a scoped session (schema v10): the node's key (its ``key_env``) and
    #: ``origin_ct`` are sealed boxes to the owner's identity key, its name unsealed; the
    #: owner's next full session folds it into an ordinary item (DESIGN §13).
    #: Nullable (NULL = not pending), so that a row written without it stays an ordinary one.
    pending = pw.BooleanField(default=False, null=True)


class LoginFlow(BaseModel):
    """A Nextcloud login flow (v2) between its start and the client's successful poll, at
    most ``vault.loginflow.LIFETIME`` seconds (``davserver.vault.loginflow``). Its tokens
    are stored only as keyed hashes; the client name is sealed under a key from the login
    token, the flow's secret key under one from the poll token, and the result (login name
    and app password) is encrypted to the flow's public key: this row alone, or with the
    pepper, gives nothing usable (DESIGN §15)."""

    poll_mac = pw.BlobField(primary_key=True)
    login_mac = pw.BlobField(unique=True)
    created = pw.BigIntegerField(index=True)
    client_ct = pw.BlobField()
    public_key = pw.BlobField()
    secret_ct = pw.BlobField()
    tag = pw.BlobField()
    #: None until the user approves the flow; deleted with the row at delivery.
    result_ct = pw.BlobField(null=True)
    #: Keyed hash of the starting client's address (as the failed-login throttle keys it):
    #: bounds the flows one address may have pending.
    addr_mac = pw.BlobField(index=True)


# The tables each schema version added (see davserver.index.MIGRATIONS).
V1_MODELS: list[type[BaseModel]] = [
    SchemaInfo,
    User,
    Envelope,
    Node,
    Version,
    DeadProps,
    BlobGC,
    Lock,
    LockScope,
]
V2_MODELS: list[type[BaseModel]] = [Upload, UploadChunk]
V3_MODELS: list[type[BaseModel]] = [DirVersion]
V4_MODELS: list[type[BaseModel]] = [InlineBlob, LoginFailure]
V7_MODELS: list[type[BaseModel]] = [TrashItem]
LOGINFLOW_MODELS: list[type[BaseModel]] = [LoginFlow]
V8_MODELS: list[type[BaseModel]] = [DirTree]
#: The tables of the current schema (``dir_version`` is gone since the dir_tree migration).
ALL_MODELS: list[type[BaseModel]] = (
    V1_MODELS + V2_MODELS + V4_MODELS + V7_MODELS + LOGINFLOW_MODELS + V8_MODELS
)
#: Every model any migration uses (to bind them all while migrating another database).
MIGRATION_MODELS: list[type[BaseModel]] = ALL_MODELS + V3_MODELS
