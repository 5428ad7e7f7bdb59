"""Files written whole or not at all: reports, caches and model files that another process may read meanwhile."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
import os
from pathlib import Path
import secrets
from typing import IO, Any


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = 'wb') -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on a clean exit fsync it and rename it over ``path``.

    A kill or an exception mid-write leaves the old file (or none), never half of one, and a
    parallel reader never sees a partial file: rename within one folder is atomic.
    """
    if mode not in ('w', 'wb'):
        raise ValueError(f'atomic_open writes whole files: mode must be "w" or "wb", got {mode!r}')
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp')
    # os.open, not mkstemp: the file gets the usual 0666 & ~umask, not mkstemp's 0600
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically; returns the path."""
    with atomic_open(path, 'wb') as f:
        f.write(data.encode() if isinstance(data, str) else data)
    return Path(path)
