"""The algorithms this app runs: every ``ALGORITHM`` declared by a module of the ``strategies`` package.

Adding an algorithm is adding ``strategies/<name>.py`` (ending with its
:class:`~fedapp.algorithm.Algorithm` declaration) and ``clients/<name>.py``; nothing here changes.
The ``strategies`` package extends its path over ``sys.path`` (``pkgutil.extend_path``), so a
folder of your own that holds a ``strategies/`` directory adds algorithms from outside this
repository too (CONTRIBUTING.md). Importing every strategy module costs about a tenth of a second
next to torch's import; a ClientApp process pays it once per message.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

import strategies
from fedapp.algorithm import Algorithm
from fedapp.options import ConfigError


@functools.cache
def algorithms() -> dict[str, Algorithm]:
    """``name -> Algorithm`` for every declaration found, in module-name order."""
    found: dict[str, Algorithm] = {}
    origin: dict[str, str] = {}
    for module_info in sorted(pkgutil.iter_modules(strategies.__path__), key=lambda info: info.name):
        module_name = f"{strategies.__name__}.{module_info.name}"
        declared = getattr(importlib.import_module(module_name), "ALGORITHM", None)
        if declared is None:
            continue  # shared code such as strategies/base.py
        if not isinstance(declared, Algorithm):
            raise TypeError(f"{module_name}.ALGORITHM is a {type(declared).__name__}, not a fedapp.algorithm.Algorithm")
        if declared.name in found:
            raise ValueError(f"algorithm {declared.name!r} is declared by {origin[declared.name]} and {module_name}")
        found[declared.name] = declared
        origin[declared.name] = module_name
    return found


def get_algorithm(name: str) -> Algorithm:
    """The declaration of ``name``; an unknown name is a ConfigError listing the available ones."""
    table = algorithms()
    if name not in table:
        raise ConfigError(f"algorithm={name!r} is not available; available: {', '.join(sorted(table))}")
    return table[name]


def display_name(name: str) -> str:
    """How tables and reports name ``name`` (the name itself if it is not declared)."""
    declared = algorithms().get(name)
    return declared.display_name if declared else name
