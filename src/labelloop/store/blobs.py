"""Content-addressed blob store (sha256) over fsspec: local files by default, any fsspec URL for teams."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import BinaryIO

import fsspec
from fsspec.implementations.local import LocalFileSystem

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class BlobStore:
    """Blobs live at `<root>/<sha[:2]>/<sha>`; writes go to a temporary name first, then are renamed."""

    def __init__(self, url: str, cache_dir: Path | None = None):
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.is_local = isinstance(self.fs, LocalFileSystem)
        self.cache_dir = cache_dir
        if self.is_local:
            self.fs.makedirs(self.root, exist_ok=True)

    def _path(self, sha: str) -> str:
        if len(sha) != 64 or not all(c in "0123456789abcdef" for c in sha):
            raise ValueError(f"not a sha256 hex digest: {sha!r}")
        return f"{self.root}/{sha[:2]}/{sha}"

    def exists(self, sha: str) -> bool:
        return self.fs.exists(self._path(sha))

    def put_file(self, path: Path, sha: str | None = None) -> tuple[str, bool]:
        """Store a file; returns (sha256, created) where created is False if the blob was already there."""
        sha = sha or sha256_file(path)
        target = self._path(sha)
        if self.fs.exists(target):
            return sha, False
        parent = target.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        temporary = f"{parent}/.{sha}.{uuid.uuid4().hex}.tmp"
        if self.is_local:
            shutil.copyfile(path, temporary)
            os.replace(temporary, target)  # atomic: a reader never sees half a blob
        else:
            self.fs.put_file(str(path), temporary)
            self.fs.mv(temporary, target)
        return sha, True

    def put_bytes(self, data: bytes) -> tuple[str, bool]:
        with tempfile.NamedTemporaryFile(delete=False) as handle:
            handle.write(data)
        try:
            return self.put_file(Path(handle.name), hashlib.sha256(data).hexdigest())
        finally:
            os.unlink(handle.name)

    def open(self, sha: str) -> BinaryIO:
        return self.fs.open(self._path(sha), "rb")

    def local_path(self, sha: str) -> Path:
        """A local file with the blob's bytes (the blob itself when local, else a cached copy)."""
        if self.is_local:
            return Path(self._path(sha))
        if self.cache_dir is None:
            raise RuntimeError("a remote blob store needs a cache directory for local reads")
        cached = self.cache_dir / sha[:2] / sha
        if not cached.exists():
            cached.parent.mkdir(parents=True, exist_ok=True)
            temporary = cached.with_suffix(f".{uuid.uuid4().hex}.tmp")
            self.fs.get_file(self._path(sha), str(temporary))
            os.replace(temporary, cached)
        return cached

    def delete(self, sha: str) -> None:
        path = self._path(sha)
        if self.fs.exists(path):
            self.fs.rm(path)

    def __iter__(self):
        """Every stored sha (for garbage collection and checks)."""
        if not self.fs.exists(self.root):
            return
        for path in self.fs.find(self.root):
            name = path.rsplit("/", 1)[-1]
            if len(name) == 64 and not name.startswith("."):
                yield name
