"""What Nextcloud's and ownCloud's clients call besides WebDAV (DESIGN §14).

The desktop clients (``nextcloudcmd``, ``owncloudcmd``) and the mobile apps ask, before
they sync: ``/status.php`` (is a server there, which version), the OCS capabilities (the
WebDAV root, chunking, checksums), the OCS user (who am I, how much space), and later the
connectivity check and a few app endpoints. Any 404 there ends their setup. This package
answers them as Nextcloud does, in Nextcloud's OCS envelope:

- ``envelope``: the ``{"ocs": {"meta", "data"}}`` envelope, JSON or XML, v1 or v2;
- ``login``: WebDAV's Basic authentication (same throttle, cache and logs) in front of an
  endpoint, its refusals in the envelope;
- ``endpoints``: the answers, one WSGI application each, wired in ``davserver.web.routes``;
- ``apppassword``: ``core/getapppassword``, ``core/apppassword`` (DELETE) and its
  ``rotate``: app passwords are device tokens.

It reads the vault only through the logged-in user's ``Session`` (and the app passwords
through the vault's token calls for that session's user), and logs nothing of its own
beyond what the authenticator logs.
"""

from davserver.web.ocs.endpoints import NextcloudApi

__all__ = ["NextcloudApi"]
