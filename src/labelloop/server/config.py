"""Server settings that are not project settings: body limits, session lifetime, cookie flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta

MiB = 1 << 20
DEFAULT_REQUEST_THREADS = 8


@dataclass(frozen=True)
class ServerConfig:
    max_json_bytes: int = 16 * MiB  # a request body that is not an upload (masks as RLE fit easily)
    max_upload_bytes: int = 2048 * MiB  # multipart uploads of images
    session_lifetime: timedelta = timedelta(hours=12)
    secure_cookies: bool | None = None  # None: Secure when the request came over https
    job_workers: int = field(default_factory=lambda: int(os.environ.get("LABELLOOP_JOB_WORKERS", "1")))
    # Threads that run requests' database work, per process (anyio's default is 40). More threads than cores only
    # queue on the GIL and, on SQLite, on the one writer lock; a request waiting for a thread costs nothing.
    request_threads: int = field(default_factory=lambda: int(os.environ.get("LABELLOOP_REQUEST_THREADS",
                                                                            str(DEFAULT_REQUEST_THREADS))))
