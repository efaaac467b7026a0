"""Small shared I/O helpers: atomic writes and JSON-safe conversion."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

__all__ = ["atomic_write_text", "atomic_write_bytes", "to_jsonable", "read_json"]


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file and rename: readers never see a partial
    file, and an existing file survives a failed write untouched."""
    return atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path, data: bytes) -> Path:
    """:func:`atomic_write_text` for bytes (images)."""
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file ordinary permissions
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def to_jsonable(obj):
    """Convert numpy scalars/arrays (nested in dicts, lists) to plain Python for JSON."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None if np.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


def read_json(path, what: str) -> dict:
    """Read a JSON object from ``path``; raise InputError naming ``what`` when it is not one."""
    from .errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what}: no file at {str(path)!r}")
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise InputError(f"{what}: {str(path)!r} is not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise InputError(f"{what}: {str(path)!r} must hold a JSON object; got {type(obj).__name__}")
    return obj
