"""The ``-c`` run-config overrides of a command, checked before anything is written or started.

:func:`parse_overrides` reads ``-c`` items as ``flwr run -c`` does but names each mistake;
:func:`to_override_string` writes values back in that syntax; :func:`resolve_config` validates the
whole config for a number of nodes (keys, values, data split, what the ServerApp would refuse) and
fixes the absolute run directory, so that a refused command changes nothing.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any, Sequence

import click
from flwr.common.config import parse_config_args

from fedapp.config import ConfigError, RunConfig
from fedapp.results import resolve_run_dir

# Flower's own pattern for one ``key=value`` item of ``-c`` (flwr.common.config.parse_config_args).
_ITEM = re.compile(r"(\S+?)=(\'[^\']*\'|\"[^\"]*\"|\S+)")


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """The ``-c`` items as Flower parses them, but each mistake is refused with the item named.

    Flower refuses an unquoted string value (``dataset=lt-digits``) with a generic message and
    silently drops text that is no ``key=value`` pair (``seed``, ``seed=``); here both are a
    :class:`ConfigError` naming the item and, for a bare word, the quoted form to use. A single
    item ending in ``.toml`` is a TOML file of overrides, as with ``flwr run -c``.
    """
    items = [item for item in items if item]
    if len(items) == 1 and items[0].endswith(".toml"):
        path = Path(items[0]).expanduser()
        try:
            return parse_config_args(items)
        except FileNotFoundError:
            raise ConfigError(f"-c {items[0]!r}: no such file; allowed: a TOML file of run-config keys, "
                              'or key=value items like -c \'seed=1 dataset="lt-digits"\'') from None
        except (OSError, ValueError) as error:
            raise ConfigError(f"-c {items[0]!r}: {path} is not a readable TOML file ({error})") from None
    for item in items:
        if item.endswith(".toml"):
            raise ConfigError(f"-c {item!r}: a .toml file must be the only -c item")
        leftover = _ITEM.sub(" ", item).strip()
        if leftover:
            raise ConfigError(f"-c {item!r}: {leftover.split()[0]!r} is not a key=value item; allowed: "
                              'space-separated key=value items, strings in double quotes, e.g. '
                              '-c \'seed=1 dataset="lt-digits"\'')
        keys = [key for key, _ in _ITEM.findall(item)]
        twice = sorted({key for key in keys if keys.count(key) > 1})
        if twice:
            raise ConfigError(f"-c {item!r}: {', '.join(twice)} given more than once; allowed: each key once")
        for key, value in _ITEM.findall(item):
            try:
                tomllib.loads(f"{key} = {value}")
            except tomllib.TOMLDecodeError:
                quoted = json.dumps(value.strip("'\""))
                raise ConfigError(
                    f"{key}={value} is not allowed: {value!r} is not a number, true/false or a quoted "
                    f"string; a string value must be quoted: -c '{key}={quoted}'"
                ) from None
    try:
        return parse_config_args(items)
    except click.ClickException as error:  # what the checks above did not catch, in Flower's words
        raise ConfigError(f"-c {' '.join(items)!r}: {error.format_message()}") from None


def to_override_string(values: dict[str, Any]) -> str:
    """``key=value`` pairs in the TOML syntax ``flwr run -c`` parses."""
    parts = []
    for key, value in values.items():
        if isinstance(value, bool):
            parts.append(f"{key}={'true' if value else 'false'}")
        elif isinstance(value, str):
            parts.append(f"{key}={json.dumps(value)}")
        else:
            parts.append(f"{key}={value!r}")
    return " ".join(parts)


def resolve_config(run_config: Sequence[str], nodes: int) -> tuple[RunConfig, dict[str, Any]]:
    """The validated config and the overrides to pass to ``flwr run`` (with an absolute output-dir).

    Refuses (``ConfigError``/``ValueError``) before anything is written: the keys and values, the
    data split over ``nodes``, and what the ServerApp would refuse before round 1
    (:func:`fedapp.server_app.preflight`: device, algorithm/dataset pairing, the checkpoint to resume).
    """
    overrides = parse_overrides(list(run_config)) if run_config else {}
    defaults = RunConfig.default_values()
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ConfigError(f"unknown run-config key(s) {unknown}; allowed keys: {sorted(defaults)}")
    config = RunConfig.from_run_config({**defaults, **overrides})
    if config.min_available_clients > nodes:
        raise ConfigError(f"min-available-clients={config.min_available_clients} is not allowed with --nodes "
                          f"{nodes}; allowed: <= {nodes} (the run would wait for clients that never come)")
    if config.resume:
        # Continue that run in its own directory; refuse now (before any process starts) if the
        # checkpoint is missing, corrupt or from another config.
        run_dir = resolve_run_dir(config.resume, config.algorithm, config.dataset)
        if config.output_dir and resolve_run_dir(config.output_dir, config.algorithm, config.dataset) != run_dir:
            raise ConfigError(f"output-dir={config.output_dir!r} is not allowed with resume={config.resume!r}: a "
                              "resumed run continues in its own directory; drop output-dir")
        if not run_dir.is_dir():
            raise ConfigError(f"resume={config.resume!r}: {run_dir} is not a directory; allowed: the run "
                              "directory of an earlier run (with its checkpoint.npz)")
        overrides["resume"] = str(run_dir)
    else:
        run_dir = resolve_run_dir(config.output_dir, config.algorithm, config.dataset)
        check_new_run_dir(run_dir, config.output_dir)
    overrides["output-dir"] = str(run_dir)
    config = config.replace(output_dir=str(run_dir))
    # Imported only now: they load torch (seconds), which --help and a refused -c item do without.
    from fedapp.data import federate
    from fedapp.server_app import preflight

    federate(config, nodes)  # fails now, with a clear message, if the data cannot be split this way
    preflight(config)
    return config, overrides


def check_new_run_dir(run_dir: Path, given: str) -> None:
    """Refuse a run directory that is a file, lies under a file, or holds files already."""
    key = f"output-dir={given or str(run_dir)!r}"
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{key} is a file, not a directory; allowed: a new or empty directory")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        raise ConfigError(f"{key} exists and is not empty; allowed: a new or empty directory")
    for parent in run_dir.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{key} lies under {parent}, which is a file; allowed: a new or empty directory")
            break
