"""File output that never leaves half-written files: atomic writes (temp file + rename), one
error for a full or read-only disk, and an exclusive lock for folders two runs could share."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from .errors import UsageError

__all__ = [
    "FileLock",
    "atomic_path",
    "cache_dir",
    "check_writable",
    "copy_file",
    "sha256_file",
    "write_bytes",
    "write_json",
    "write_text",
]

log = logging.getLogger(__name__)

# Errors a user fixes outside resdeploy (space, permissions): exit 2 with the path, not a traceback.
_DISK_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                errno.EPERM: "operation not permitted", errno.EFBIG: "file too large"}


def disk_error(exc: OSError, path: Path | str) -> UsageError:
    reason = _DISK_ERRORS.get(exc.errno or 0, exc.strerror or str(exc))
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    fix = "free space or choose another output path" if full else "choose another output path"
    return UsageError(f"cannot write {path}: {reason}; {fix}")


def check_writable(path: str | os.PathLike[str]) -> Path:
    """Fail early, before any work, if ``path`` cannot be created."""
    out = Path(path)
    parent = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise UsageError(f"output {out} is a directory; give a file path")
    if parent.exists() and not parent.is_dir():
        raise UsageError(f"output folder {parent} is a file; choose another output path")
    if not parent.exists():
        raise UsageError(f"output directory {parent} does not exist; create it first")
    # Probe by creating a file: permission bits alone mislead root and read-only file systems.
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".probe", dir=parent)
    except OSError as exc:
        raise UsageError(f"output directory {parent} is not writable ({exc.strerror}); choose another -o path") from exc
    os.close(fd)
    os.unlink(probe)
    return out


def check_outdir(path: str | os.PathLike[str]) -> Path:
    """An output folder: created if missing; a file in its place or no write access is exit 2."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"output folder {out} is a file; give a folder path with -o")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise disk_error(exc, out) from exc
    check_writable(out / "probe")
    return out


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only on success. A full or
    read-only disk becomes one :class:`UsageError` naming ``path``; the temporary file is removed."""
    out = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent or ".")
    except OSError as exc:
        raise disk_error(exc, out) from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, out)
    except OSError as exc:
        if exc.errno in _DISK_ERRORS:
            raise disk_error(exc, out) from exc
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text(path: str | os.PathLike[str], text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def copy_file(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_dir() -> Path:
    """``$RESDEPLOY_CACHE`` or ``~/.cache/resdeploy``."""
    root = os.environ.get("RESDEPLOY_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "resdeploy"
    )
    return Path(root)


class FileLock:
    """An exclusive ``flock`` on ``path`` holding the owner's pid. The kernel drops it when the
    owner dies, so a lock left by a killed run is taken over without a stale-lock guess."""

    def __init__(self, path: str | os.PathLike[str], *, what: str, wait: bool = False) -> None:
        self.path, self.what, self.wait = Path(path), what, wait
        self._fd: int | None = None

    def __enter__(self) -> FileLock:
        try:
            import fcntl
        except ImportError:  # not POSIX: no locking
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UsageError(
                f"{self.what}: {self.path.parent} is in use by another resdeploy process (pid {holder}); "
                "wait for it to finish or choose another output folder"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is None:
            return
        import fcntl

        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
