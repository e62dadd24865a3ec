"""Writing files so that a crash never leaves half of one, and values as strict JSON.

A leaf module (it imports nothing from the app), shared by :mod:`fedapp.checkpoint`,
:mod:`fedapp.results`, :mod:`fedapp.run_files`, :mod:`fedapp.node_state` and the partition cache.

:func:`atomic_write_bytes` writes to a temporary file in the target's folder, flushes and fsyncs
it, ``os.replace``-s it over the target and fsyncs the folder: a crash at any moment leaves the old
file or the new one, and concurrent writers (each with its own temporary file) never tear it.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: Path, payload: bytes) -> Path:
    """Write ``payload`` to ``path`` so that a crash leaves the old file or the new one, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def jsonable(value: Any) -> Any:
    """``value`` with NaN/inf as None and numpy/torch scalars as Python numbers, so files are strict JSON."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return jsonable(value.item())
    return value
