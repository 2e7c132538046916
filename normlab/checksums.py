"""File checksums (a leaf module: it imports nothing from normlab)."""

from __future__ import annotations

import hashlib


def sha256_of(path) -> str:
    """The sha256 of the file at ``path`` as 64 lower-case hexadecimal digits (what ``sha256sum`` prints),
    read in 1 MiB blocks so that a large download is never held in memory whole."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
