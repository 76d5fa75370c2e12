"""Where a Label Studio task's image is: the names it may have in the project, and its bytes when it is not there.

Label Studio refers to an image by URL: its own uploads (`/data/upload/<project>/<8 hex>-<name>`), local files it
serves (`/data/local-files/?d=<path>`), or any http(s) URL. Images of the project are found by name; the others are
fetched from Label Studio with its token, or read from a local folder the user named (never elsewhere on disk).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, unquote, urljoin, urlparse

from labelloop.errors import InvalidInput, NotFound

UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-(.+)$")  # Label Studio's uploads: "42d46c4c-my-pic.jpeg"
MAX_IMAGE_BYTES = 256 << 20
FETCH_TIMEOUT = 10.0  # seconds


@dataclass
class LabelStudioAccess:
    """How to reach Label Studio's files: its URL and a user's token (from /setup, or $LABEL_STUDIO_URL and
    $LABEL_STUDIO_API_KEY as Label Studio's own ML backends read them), and a local folder of images."""

    url: str | None = None
    token: str | None = None
    local_root: Path | None = None

    @classmethod
    def from_env(cls, local_root: str | Path | None = None) -> LabelStudioAccess:
        root = local_root or os.environ.get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")
        return cls(os.environ.get("LABEL_STUDIO_URL") or None, os.environ.get("LABEL_STUDIO_API_KEY") or None,
                   Path(root).expanduser().resolve() if root else None)


def reference_path(reference: str) -> str:
    """The file path a reference names: the URL's path, or the `d` parameter of Label Studio's local-files URL."""
    parsed = urlparse(reference)
    if parsed.path.rstrip("/").endswith("/data/local-files") and "d" in parse_qs(parsed.query):
        return unquote(parse_qs(parsed.query)["d"][0])
    if parsed.scheme in ("", "file", "http", "https", "s3", "gs", "azure-blob"):
        return unquote(parsed.path)
    return reference


def candidate_names(reference: str) -> list[str]:
    """Names an item of the project may carry for this reference, most specific first: every trailing part of the
    path ("a/b/c.jpg", "b/c.jpg", "c.jpg"), and the original name of a Label Studio upload."""
    parts = [p for p in PurePosixPath(reference_path(reference).replace("\\", "/")).parts if p not in ("/", "")]
    names = ["/".join(parts[i:]) for i in range(len(parts))]
    if parts:
        upload = UPLOAD_PREFIX.match(parts[-1])
        if upload:
            names.append(upload.group(1))
    return list(dict.fromkeys(n for n in names if n))


def fetch(reference: str, access: LabelStudioAccess) -> tuple[str, bytes]:
    """(file name, bytes) of an image that is not in the project: from Label Studio (relative URLs and URLs on its
    host carry its token), another http(s) URL, or a file under the local folder."""
    parsed = urlparse(reference)
    names = candidate_names(reference)
    name = names[-1] if names else "image"
    served_local = parsed.path.rstrip("/").endswith("/data/local-files")
    if served_local and access.local_root is not None or parsed.scheme == "file" or (
            not parsed.scheme and not reference.startswith("/data/")):
        if access.local_root is None:
            raise NotFound(f"image {reference!r} is not in the project; to read local files, start the backend with "
                           f"--local-files FOLDER (or set LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)")
        return name, _read_local(reference_path(reference), access.local_root)
    if parsed.scheme in ("http", "https"):
        return name, _download(reference, access)
    if reference.startswith("/"):
        if not access.url:
            raise NotFound(f"image {reference!r} is not in the project and Label Studio's URL is unknown: connect the "
                           f"backend from Label Studio (its /setup sends the URL and a token), or set LABEL_STUDIO_URL "
                           f"and LABEL_STUDIO_API_KEY")
        return name, _download(urljoin(access.url.rstrip("/") + "/", reference.lstrip("/")), access)
    raise NotFound(f"image {reference!r} is not in the project and cannot be fetched: give a Label Studio URL, an "
                   f"http(s) URL, or a path under the local images folder (--local-files)")


def _read_local(path: str, root: Path) -> bytes:
    target = (root / path.lstrip("/")).resolve()
    if not target.is_relative_to(root):
        raise InvalidInput(f"image path {path!r} leaves the local images folder {root}")
    if not target.is_file():
        raise NotFound(f"image {path!r} is neither in the project nor a file under {root}")
    return target.read_bytes()


def _download(url: str, access: LabelStudioAccess) -> bytes:
    import httpx

    headers = {}
    if access.url and access.token and urlparse(url).netloc == urlparse(access.url).netloc:
        headers["Authorization"] = f"Token {access.token}"  # Label Studio's API token scheme
    try:
        with httpx.stream("GET", url, headers=headers, timeout=FETCH_TIMEOUT, follow_redirects=True) as response:
            if response.status_code != 200:
                raise NotFound(f"image {url} could not be fetched: HTTP {response.status_code}"
                               + (" (check the Label Studio token)" if response.status_code in (401, 403) else ""))
            data = bytearray()
            for block in response.iter_bytes():
                data.extend(block)
                if len(data) > MAX_IMAGE_BYTES:
                    raise InvalidInput(f"image {url} is larger than {MAX_IMAGE_BYTES >> 20} MiB")
            return bytes(data)
    except httpx.HTTPError as exc:
        raise NotFound(f"image {url} could not be fetched: {exc}") from None
