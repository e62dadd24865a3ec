"""The algorithms this app runs: every ``ALGORITHM`` declared by a module of the ``strategies`` package.

Adding an algorithm is adding ``strategies/<name>.py`` (ending with its
:class:`~fedapp.algorithm.Algorithm` declaration) and ``clients/<name>.py``; nothing here changes.
Only the folder the ``strategies`` package was imported from is scanned, so the code that runs
is the code of one checkout (or one Flower app bundle). Algorithms kept outside the repository
are opt-in: ``FEDAPP_ALGORITHMS`` names their strategy modules (comma-separated, importable from
``sys.path``), in the environment of every process that runs the ServerApp or a ClientApp
(CONTRIBUTING.md). Importing every strategy module costs about a tenth of a second next to torch's
import; a ClientApp process pays it once per message.
"""

from __future__ import annotations

import functools
import importlib
import os
import pkgutil
from pathlib import Path

import strategies
from fedapp.algorithm import Algorithm
from fedapp.options import ConfigError

ENV_VAR = "FEDAPP_ALGORITHMS"


def strategy_modules() -> tuple[list[str], list[str]]:
    """The modules to look in: ``strategies/*.py`` of this checkout, and those ``FEDAPP_ALGORITHMS`` names."""
    own = Path(strategies.__file__).resolve().parent
    names = sorted(f"{strategies.__name__}.{info.name}" for info in pkgutil.iter_modules([str(own)]))
    extra = [name.strip() for name in os.environ.get(ENV_VAR, "").split(",") if name.strip()]
    return names, extra


def _import_extra(module_name: str):
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"{ENV_VAR} names {module_name!r}, which cannot be imported: {error}") from None


@functools.cache
def algorithms() -> dict[str, Algorithm]:
    """``name -> Algorithm`` for every declaration found (this checkout's in module-name order, then the extra ones)."""
    found: dict[str, Algorithm] = {}
    origin: dict[str, str] = {}
    own, extra = strategy_modules()
    modules = [importlib.import_module(name) for name in own] + [_import_extra(name) for name in extra]
    for module_name, module in zip(own + extra, modules):
        declared = getattr(module, "ALGORITHM", None)
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
