"""File digests: one chunked reader for the artifact's file digests and the checkpoint digest."""
from __future__ import annotations

import hashlib
from pathlib import Path


def hash_file(h, path: Path):
    """Feed a file to a hashlib object in 1 MiB chunks; returns it."""
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h


def file_sha256(path: Path) -> str:
    return hash_file(hashlib.sha256(), path).hexdigest()
