"""The errors of the real datasets' loaders, worded the same way by every loader.

:class:`MissingDataFileError` (a ``FileNotFoundError``) names the exact file expected, where it
comes from and the folder layout; :class:`CorruptDataFileError` (a ``ValueError``) names the file
and what is wrong with it. :func:`require_file`, :func:`require_dir`, :func:`require_files` and
:func:`corrupt` (and :func:`missing_message`) build them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

PathLike = str | os.PathLike[str]


class MissingDataFileError(FileNotFoundError):
    """A file or folder of a real dataset is not under ``data-root``; the message says how to get it."""


class CorruptDataFileError(ValueError):
    """A dataset file is there but unreadable or not in its published format; the message says why."""


def missing_message(path: Path, kind: str, what: str, source: str, layout: str = "") -> str:
    """The text of a :class:`MissingDataFileError`: the path expected, what it is, source, layout."""
    lines = [f"missing {kind} {path} ({what})", f"  it comes from: {source}"]
    if layout:
        lines.append("  expected layout:")
        lines.extend("    " + line for line in layout.strip("\n").splitlines())
    lines.append("  nothing is downloaded at run time: put the files there yourself")
    return "\n".join(lines)


def require_file(path: PathLike, what: str, source: str, layout: str = "") -> Path:
    """Return ``path`` as a ``Path`` if it is a file; otherwise raise :class:`MissingDataFileError`.

    The error names the exact path expected, ``what`` it is, ``source`` (the official distribution
    it comes from, by name) and the expected folder ``layout``.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingDataFileError(missing_message(path, "file", what, source, layout))
    return path


def require_dir(path: PathLike, what: str, source: str, layout: str = "") -> Path:
    """Return ``path`` as a ``Path`` if it is a folder; otherwise raise :class:`MissingDataFileError`."""
    path = Path(path)
    if not path.is_dir():
        raise MissingDataFileError(missing_message(path, "folder", what, source, layout))
    return path


def require_files(paths: Sequence[Path], what: str, source: str, layout: str = "") -> None:
    """Raise :class:`MissingDataFileError` naming the first missing files (and how many) of ``paths``."""
    missing = [path for path in paths if not path.is_file()]
    if not missing:
        return
    shown = ", ".join(str(path) for path in missing[:5])
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    raise MissingDataFileError(
        missing_message(missing[0], "file", f"{len(missing)} of {len(paths)} {what} are missing: "
                         f"{shown}{more}", source, layout)
    )


def corrupt(path: PathLike, problem: str, source: str) -> CorruptDataFileError:
    """The :class:`CorruptDataFileError` for ``path`` (raise it, chained to the cause if there is one)."""
    return CorruptDataFileError(
        f"corrupt or unexpected data file {Path(path)}: {problem}; replace it with an intact copy of "
        f"{source}"
    )


def read_list_file(path: Path) -> list[str]:
    """Non-empty, stripped lines of a text list file (split lists, image lists)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise CorruptDataFileError(f"corrupt or unexpected data file {path}: not UTF-8 text ({err})") from err
    return [line.strip() for line in text.splitlines() if line.strip()]
