"""What the DAV modules need from the provider, declared below all of them.

``provider.VaultProvider`` (WsgiDAV's provider class) builds resources and hands each request
to a dispatch function; ``resources``, ``handlers``, ``propfind`` and ``nextcloud`` use the
provider back. So that knowledge flows one way, they know it only as ``TreeProvider``, the
protocol here, and the provider does not import the handlers: the assembly
(``davserver.server.build_app``) gives it ``handlers.dispatch`` as a ``Dispatch``. The chain
is ``provider -> resources -> interface`` and ``handlers -> resources, propfind -> interface``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from davserver.vault.nodes import Entry

#: The resource class a provider builds (``resources._VaultResource``).
R_co = TypeVar("R_co", covariant=True)


class TreeProvider(Protocol[R_co]):
    """A user's tree as WsgiDAV resources, plus what the verbs need to know."""

    #: Where the provider is mounted and its share path (WsgiDAV sets both).
    mount_path: str
    share_path: str
    #: WsgiDAV's lock manager (``locks.DavLockManager``), or None before it is set.
    lock_manager: Any
    #: Read size for request bodies, and the cap on a PUT body (0: none).
    block_size: int
    max_body_bytes: int

    def get_resource_inst(self, path: str | None, environ: dict[str, Any]) -> R_co | None:
        """The resource at ``path`` for this request's user, or None."""

    def resource_from_entry(self, path: str, entry: Entry, environ: dict[str, Any]) -> R_co:
        """The resource of a vault entry already looked up (cached for the request)."""

    def usage(self, environ: dict[str, Any]) -> tuple[int, int | None]:
        """(bytes used, quota or None) of this request's user, once per request."""


#: Handles one request for a provider: ``dispatch(provider, environ, start_response,
#: default)``, where ``default`` is WsgiDAV's own handler for the verb.
Dispatch = Callable[[Any, dict[str, Any], Any, Any], Any]
