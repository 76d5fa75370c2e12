"""Content-addressed blob store (sha256) over fsspec: local files by default, any fsspec URL for teams.

S3-compatible storage (`LABELLOOP_BLOB_URL=s3://bucket/prefix`, extra `[s3]`) reads the usual variables:
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), AWS_DEFAULT_REGION, and the endpoint of a non-AWS
server from LABELLOOP_S3_ENDPOINT_URL, else AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL. A store is checked when it
is opened (the bucket exists, the credentials are accepted, the endpoint answers) and every failure becomes a
StorageError that says what to fix.

A blob may also be a *reference*: an object registered where it already lies (`labelloop import NAME
s3://bucket/prefix --by-reference`) and never copied. The workspace tells the store where such a blob lives
(`references`: sha -> URL); reads fetch it into the local cache and check its sha256, so an object changed after
its import is reported instead of being read as something else."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import fsspec
from fsspec.implementations.local import LocalFileSystem

from labelloop.errors import LabelloopError

CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
REMOTE_TIMEOUT_S = 10  # connect timeout: an unreachable endpoint fails in seconds, not after botocore's minute


class StorageError(LabelloopError):
    """The blob storage cannot be used as configured (missing bucket, refused credentials, unreachable endpoint);
    the message names the setting to fix. Nothing was written."""


def s3_endpoint() -> str | None:
    for name in ("LABELLOOP_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if os.environ.get(name):
            return os.environ[name]
    return None


def storage_options(url: str) -> dict[str, Any]:
    """fsspec options for a URL: for s3://, the endpoint, short timeouts and no cached listings (several processes
    write the same bucket, so a listing cached in one would hide the others' objects)."""
    if not url.startswith(("s3://", "s3a://")):
        return {}
    from labelloop.extras import require

    require("s3", "s3fs", what="S3-compatible blob storage")
    options: dict[str, Any] = {
        "skip_instance_cache": True,
        "use_listings_cache": False,
        "config_kwargs": {"connect_timeout": REMOTE_TIMEOUT_S, "read_timeout": 60,
                          "retries": {"max_attempts": 3, "mode": "standard"}},
    }
    if endpoint := s3_endpoint():
        options["client_kwargs"] = {"endpoint_url": endpoint}
    return options


def open_filesystem(url: str):
    """(filesystem, root path) for any fsspec URL or local path, with labelloop's options for S3."""
    try:
        return fsspec.core.url_to_fs(url, **storage_options(url))
    except ValueError as exc:
        raise StorageError(f"{url}: {exc}") from exc


def _where(url: str) -> str:
    endpoint = s3_endpoint() if url.startswith(("s3://", "s3a://")) else None
    return f"{url} (endpoint {endpoint})" if endpoint else url


def storage_error(exc: BaseException, url: str, action: str) -> StorageError:
    """A StorageError for an fsspec/s3fs failure, naming what to fix."""
    if isinstance(exc, StorageError):
        return exc
    text = " ".join(str(exc).split()) or type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    names = {type(e).__name__ for e in (exc, cause) if e is not None}
    s3 = url.startswith(("s3://", "s3a://"))
    bucket = url.split("://", 1)[-1].split("/", 1)[0]
    if names & {"EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError", "ConnectionError",
                "ConnectionRefusedError", "ServerDisconnectedError"} or "Could not connect" in text:
        hint = (f"check LABELLOOP_S3_ENDPOINT_URL (or AWS_ENDPOINT_URL; now {s3_endpoint() or 'unset: AWS'}) and "
                f"that the server is running") if s3 else "check the URL and that the server is running"
        return StorageError(f"cannot reach the storage at {_where(url)} to {action}: {text}; {hint}")
    if isinstance(exc, PermissionError) or names & {"NoCredentialsError", "PartialCredentialsError"}:
        hint = ("check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and what the bucket's policy "
                "allows") if s3 else "check the credentials and permissions"
        return StorageError(f"access to {_where(url)} was refused ({action}): {text}; {hint}")
    if isinstance(exc, FileNotFoundError) and s3 and ("bucket" in text.lower() or "NoSuchBucket" in text):
        return StorageError(f"the bucket {bucket!r} does not exist at {_where(url)}: create it (e.g. "
                            f"`aws s3 mb s3://{bucket}`) or fix the URL (LABELLOOP_BLOB_URL or the import's URL)")
    return StorageError(f"{_where(url)}: cannot {action}: {text}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class BlobStore:
    """Blobs live at `<root>/<sha[:2]>/<sha>`. Local writes go to a temporary name first, then are renamed; an object
    store's PUT is atomic by itself (an object appears whole or not at all), so blobs are written in place there."""

    def __init__(self, url: str, cache_dir: Path | None = None,
                 references: Callable[[str], str | None] | None = None):
        self.url = url.rstrip("/")
        self.fs, self.root = open_filesystem(self.url)
        self.is_local = isinstance(self.fs, LocalFileSystem)
        self.cache_dir = cache_dir
        self.references = references
        self._reference_fs: dict[str, Any] = {}
        self._lock = threading.Lock()
        if self.is_local:
            self.fs.makedirs(self.root, exist_ok=True)
        else:
            self.check()

    def check(self) -> None:
        """Raise StorageError unless the store answers: its bucket exists and the credentials are accepted."""
        bucket = self.root.split("/", 1)[0]
        try:
            self.fs.info(bucket)
        except FileNotFoundError as exc:
            raise storage_error(FileNotFoundError(f"NoSuchBucket {bucket}"), self.url, "open the blob store") from exc
        except Exception as exc:
            raise storage_error(exc, self.url, "open the blob store") from exc

    def _path(self, sha: str) -> str:
        if not _SHA256.fullmatch(sha):
            raise ValueError(f"not a sha256 hex digest: {sha!r}")
        return f"{self.root}/{sha[:2]}/{sha}"

    def exists(self, sha: str) -> bool:
        try:
            return self.fs.exists(self._path(sha))
        except Exception as exc:
            raise storage_error(exc, self.url, "look up a blob") from exc

    def put_file(self, path: Path, sha: str | None = None) -> tuple[str, bool]:
        """Store a file; returns (sha256, created) where created is False if the blob was already there."""
        sha = sha or sha256_file(path)
        target = self._path(sha)
        parent = target.rsplit("/", 1)[0]
        if self.is_local:  # os directly: fsspec's exists and makedirs cost more than the copy of a small image
            if os.path.exists(target):
                return sha, False
            os.makedirs(parent, exist_ok=True)
            temporary = f"{parent}/.{sha}.{uuid.uuid4().hex}.tmp"
            shutil.copyfile(path, temporary)
            os.replace(temporary, target)  # atomic: a reader never sees half a blob
            return sha, True
        if self.exists(sha):
            return sha, False
        try:
            self.fs.put_file(str(path), target)
        except Exception as exc:
            raise storage_error(exc, self.url, f"upload {path.name}") from exc
        return sha, True

    def put_bytes(self, data: bytes) -> tuple[str, bool]:
        sha = hashlib.sha256(data).hexdigest()
        if not self.is_local:
            if self.exists(sha):
                return sha, False
            try:
                self.fs.pipe_file(self._path(sha), data)
            except Exception as exc:
                raise storage_error(exc, self.url, "upload a blob") from exc
            return sha, True
        with tempfile.NamedTemporaryFile(delete=False) as handle:
            handle.write(data)
        try:
            return self.put_file(Path(handle.name), sha)
        finally:
            os.unlink(handle.name)

    def reference(self, sha: str) -> str | None:
        """The URL a blob was registered from without being copied, if it is such a reference."""
        return self.references(sha) if self.references is not None else None

    def open(self, sha: str) -> BinaryIO:
        if self.is_local:
            path = Path(self._path(sha))
            if path.exists() or self.reference(sha) is None:
                return open(path, "rb")
            return open(self.local_path(sha), "rb")
        if self.reference(sha) is not None:
            return open(self.local_path(sha), "rb")
        try:
            return self.fs.open(self._path(sha), "rb")
        except Exception as exc:
            raise storage_error(exc, self.url, f"read blob {sha[:12]}") from exc

    def local_path(self, sha: str) -> Path:
        """A local file with the blob's bytes: the blob itself when stored locally, else a cached copy of the stored
        blob or of the object it references."""
        if self.is_local:
            path = Path(self._path(sha))
            if path.exists() or self.references is None:
                return path
        if self.cache_dir is None:
            raise RuntimeError("a remote blob store needs a cache directory for local reads")
        cached = self.cache_dir / sha[:2] / sha
        if cached.exists():
            return cached
        url = self.reference(sha)
        if url is None and self.is_local:
            return path  # neither stored nor referenced: the caller's read reports the missing file
        cached.parent.mkdir(parents=True, exist_ok=True)
        temporary = cached.with_suffix(f".{uuid.uuid4().hex}.tmp")
        try:
            if url is not None:
                self._fetch_reference(url, sha, temporary)
            else:
                try:
                    self.fs.get_file(self._path(sha), str(temporary))
                except Exception as exc:
                    raise storage_error(exc, self.url, f"read blob {sha[:12]}") from exc
            os.replace(temporary, cached)
        finally:
            temporary.unlink(missing_ok=True)
        return cached

    def _fetch_reference(self, url: str, sha: str, target: Path) -> None:
        """Copy a referenced object to `target`, checking that it still has the content it was registered with."""
        protocol = url.split("://", 1)[0] if "://" in url else "file"
        with self._lock:
            if protocol not in self._reference_fs:
                self._reference_fs[protocol] = open_filesystem(url)[0]
            fs = self._reference_fs[protocol]
        digest = hashlib.sha256()
        try:
            with fs.open(url, "rb") as source, open(target, "wb") as out:
                while chunk := source.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        except Exception as exc:
            raise storage_error(exc, url, "read a referenced object") from exc
        if digest.hexdigest() != sha:
            raise StorageError(f"{url} changed after it was imported by reference (its sha256 is now "
                               f"{digest.hexdigest()[:12]}…, not {sha[:12]}…); import it again")

    def delete(self, sha: str) -> None:
        """Remove a stored blob (never the object a reference points at: that belongs to its bucket)."""
        path = self._path(sha)
        try:
            if self.fs.exists(path):
                self.fs.rm(path)
        except Exception as exc:
            raise storage_error(exc, self.url, f"remove blob {sha[:12]}") from exc

    def __iter__(self):
        """Every stored sha (for garbage collection and checks)."""
        if not self.fs.exists(self.root):
            return
        for path in self.fs.find(self.root):
            name = path.rsplit("/", 1)[-1]
            if len(name) == 64 and not name.startswith("."):
                yield name
