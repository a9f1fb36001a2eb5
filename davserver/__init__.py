"""davserver: a WebDAV server that keeps what it stores encrypted in an untrusted object store.

Layers (imports point down only): ``dav`` -> ``vault`` -> ``index`` / ``crypto`` / ``blobs``.
See ``docs/design.md`` for the architecture and the normative formats.
"""

__version__ = "0.1.0"
