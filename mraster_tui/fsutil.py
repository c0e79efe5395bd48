"""Crash-safe file writes shared by the config saver and the state store (stdlib only)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, mode: int = 0o600,
                       backup_suffix: str | None = ".bak") -> None:
    """Write ``data`` to ``path`` so that a crash at any instant leaves either the old or the new
    complete file, never a partial one.

    The data goes to a temp file in the same directory (created with ``mode``), is fsynced, and is
    renamed over the target with ``os.replace``.  With ``backup_suffix`` the previous file is kept
    as ``<path><suffix>`` (itself replaced atomically, so the target path always exists).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if backup_suffix and target.exists():
            bak = target.with_name(target.name + backup_suffix)
            fd2, tmp2 = tempfile.mkstemp(prefix=f".{bak.name}.", suffix=".tmp", dir=target.parent)
            try:
                os.fchmod(fd2, mode)
                with os.fdopen(fd2, "wb") as fh2, open(target, "rb") as src:
                    fh2.write(src.read())
                    fh2.flush()
                    os.fsync(fh2.fileno())
                os.replace(tmp2, bak)
            except BaseException:
                _unlink_quiet(tmp2)
                raise
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        _unlink_quiet(tmp)
        raise


def _unlink_quiet(p: str) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass
