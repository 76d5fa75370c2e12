"""Turn a path or binary file object into an OpenedSource the decoders can re-read."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Union

from labelloop.media.errors import MediaError

Source = Union[str, "os.PathLike[str]", BinaryIO]
HEAD_BYTES = 132  # enough for every magic number we sniff, DICOM's 'DICM' at offset 128 included


@dataclass
class OpenedSource:
    """A readable image source: its display name, a path or seekable stream, and its first bytes."""

    name: str
    path: Path | None
    stream: BinaryIO | None
    head: bytes

    @property
    def suffix(self) -> str:
        """Lower-case suffix of the file name ('' for streams without a name)."""
        return Path(self.name).suffix.lower() if self.name else ""

    def fresh(self) -> str | BinaryIO:
        """The path as a string, or the stream rewound to its start, for a decoder to open."""
        if self.path is not None:
            return str(self.path)
        assert self.stream is not None
        self.stream.seek(0)
        return self.stream

    def read_bytes(self) -> bytes:
        """The whole file content."""
        if self.path is not None:
            return self.path.read_bytes()
        assert self.stream is not None
        self.stream.seek(0)
        return self.stream.read()


def default_name(source: Source) -> str:
    """What to call a source in error messages when the caller gave no name."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    stream_name = getattr(source, "name", None)
    return stream_name if isinstance(stream_name, str) else "<stream>"


@contextmanager
def open_source(source: Source, name: str | None = None) -> Iterator[OpenedSource]:
    """Check the source exists and is non-empty, and read its first bytes."""
    name = name or default_name(source)
    if isinstance(source, (str, os.PathLike)):
        yield _open_path(Path(source), name)
        return
    if not hasattr(source, "read"):
        raise MediaError(name, f"expected a file path or a binary file object, got {type(source).__name__}")
    if isinstance(source, io.TextIOBase):
        raise MediaError(name, "the file object is in text mode; open it with 'rb'")
    stream = _seekable_from_start(source, name)
    try:
        head = stream.read(HEAD_BYTES)
    except (OSError, ValueError) as exc:
        raise MediaError(name, f"cannot read the file object ({exc})") from None
    if not isinstance(head, bytes):
        raise MediaError(name, "the file object is in text mode; open it with 'rb'")
    if not head:
        raise MediaError(name, "the file is empty (0 bytes)")
    try:
        yield OpenedSource(name=name, path=None, stream=stream, head=head)
    finally:
        if stream is not source:
            stream.close()


def _open_path(path: Path, name: str) -> OpenedSource:
    try:
        with path.open("rb") as handle:
            head = handle.read(HEAD_BYTES)
    except FileNotFoundError:
        raise MediaError(name, "no such file; check the path") from None
    except IsADirectoryError:
        raise MediaError(name, "is a directory, not an image file") from None
    except OSError as exc:
        raise MediaError(name, f"cannot open the file ({exc.strerror or exc})") from None
    if not head:
        raise MediaError(name, "the file is empty (0 bytes)")
    return OpenedSource(name=name, path=path, stream=None, head=head)


def _seekable_from_start(stream: BinaryIO, name: str) -> BinaryIO:
    """The stream itself when it is seekable and at offset 0, else an in-memory copy of what is left."""
    try:
        if stream.seekable() and stream.tell() == 0:
            return stream
    except (OSError, ValueError) as exc:
        raise MediaError(name, f"cannot read the file object ({exc})") from None
    # Decoders rewind to offset 0, so a stream positioned elsewhere (or unseekable) is copied.
    return io.BytesIO(stream.read())
