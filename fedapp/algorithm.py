"""What an algorithm is: the declaration every ``strategies/<name>.py`` ends with.

An algorithm is one strategy module and one client module. The strategy module declares the
algorithm once, as a module-level ``ALGORITHM = Algorithm(...)``: its run-config name, the name
tables print, the task it needs, its own run-config keys, its strategy and client classes, and
the network both sides build. Everything else (the registry, the run config and its checks,
``pyproject.toml``'s run config, the README's key table, the table runner's method names) is
derived from these declarations; see CONTRIBUTING.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

from torch import nn

from fedapp.models.build import pooled_linear_model
from fedapp.options import Option
from fedapp.params import shared_keys

Task = Literal["multilabel", "singlelabel", "any"]

# The config and dataset arguments are a fedapp.config.RunConfig and a fedapp.data.base.DatasetBundle
# (typed Any: the config module imports this one).
ModelBuilder = Callable[[Any, Any], nn.Module]


@dataclass(frozen=True)
class Algorithm:
    """One algorithm, as its strategy module declares it.

    Attributes:
        name: the ``algorithm`` run-config value, e.g. ``"fedprox"``.
        display_name: how tables and reports name it, e.g. ``"FedProx"``.
        task: the datasets it runs on: ``"multilabel"``, ``"singlelabel"`` or ``"any"``.
        strategy: its :class:`~strategies.base.FederatedStrategy` subclass.
        client: its :class:`~clients.base.BaseClient` subclass.
        options: the run-config keys only this algorithm reads.
        also_reads: keys declared by another algorithm that this one reads too.
        model: ``(config, bundle) -> nn.Module``, the network the server and every client build.
        travelling_keys: ``model -> [names]``, the tensors that travel, in order.
        check: cross-key checks of its keys, run on every config (raise ConfigError; test
            ``config.algorithm`` for checks that only matter when this algorithm runs).
    """

    name: str
    display_name: str
    task: Task
    strategy: type
    client: type
    options: tuple[Option, ...] = ()
    also_reads: tuple[str, ...] = ()
    model: ModelBuilder = pooled_linear_model
    travelling_keys: Callable[[nn.Module], list[str]] = shared_keys
    check: Callable[[Any], None] | None = None

    def build_model(self, config: Any, bundle: Any) -> nn.Module:
        """The network for ``config`` on ``bundle``; refuses a dataset of the wrong task."""
        if self.task != "any":
            bundle.require_task(self.task, self.name)
        return self.model(config, bundle)
