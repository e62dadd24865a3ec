"""Read pickled data files without running code from them.

``pickle.load`` calls whatever callable a file names (``os.system`` included) while it reads it.
:func:`load_data_pickle` admits only what a data file needs: builtin containers and scalars and
numpy arrays, dtypes and scalars (with the few numpy functions that rebuild them). A file naming
anything else is refused before that thing is imported or called, with the file and the name in
the message.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

_BUILTINS = frozenset({
    "dict", "list", "tuple", "set", "frozenset", "bytearray", "bytes", "str", "int", "float", "complex", "bool",
})
# (module, name) pairs numpy's pickles use for arrays, dtypes and scalars (numpy 1.x and 2.x module paths).
_NUMPY = frozenset({
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
})
# Python 3 pickles bytes with protocol <= 2 as _codecs.encode(latin-1 text, "latin1").
_CODECS = frozenset({("_codecs", "encode")})


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle names a global that a data file has no business calling."""


def allowed_global(module: str, name: str) -> bool:
    """True for the globals :func:`load_data_pickle` admits (see the module docstring)."""
    if module in ("builtins", "__builtin__"):
        return name in _BUILTINS
    return (module, name) in _NUMPY or (module, name) in _CODECS


class DataUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :func:`allowed_global` names."""

    def __init__(self, file: io.BufferedIOBase, source: str, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if not allowed_global(module, name):
            raise UnsafePickleError(
                f"{self.source} asks to load {module}.{name}, which is not data (only numpy arrays and "
                "builtin containers and scalars are admitted); it was not run"
            )
        return super().find_class(module, name)


def load_data_pickle(path: Path, encoding: str = "ASCII") -> Any:
    """Unpickle ``path`` admitting only data; :class:`UnsafePickleError` names the file otherwise."""
    with Path(path).open("rb") as handle:
        return DataUnpickler(handle, str(path), encoding=encoding).load()
