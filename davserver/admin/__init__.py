"""The operator's services (fsck, scrub, gc, backup, migrate), called by the CLI;
below it, above vault/index/blobs."""
