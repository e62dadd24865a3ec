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
from typing import TYPE_CHECKING, Any, Callable, Literal

from fedapp.options import Option

if TYPE_CHECKING:  # torch is imported where a network is built, not where the config is read
    from torch import nn

Task = Literal["multilabel", "singlelabel", "any"]

# The config and dataset arguments are a fedapp.config.RunConfig and a fedapp.data.base.DatasetBundle
# (typed Any: the config module imports this one).
ModelBuilder = Callable[[Any, Any], "nn.Module"]


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
        model: ``(config, bundle) -> nn.Module``, the network the server and every client build
            (None: :func:`fedapp.models.build.pooled_linear_model`).
        travelling_keys: ``model -> [names]``, the tensors that travel, in order
            (None: :func:`fedapp.params.shared_keys`, every tensor but BatchNorm counters).
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
    model: ModelBuilder | None = None
    travelling_keys: Callable[[nn.Module], list[str]] | None = None
    check: Callable[[Any], None] | None = None

    def build_model(self, config: Any, bundle: Any) -> nn.Module:
        """The network for ``config`` on ``bundle``; refuses a dataset of the wrong task."""
        if self.task != "any":
            bundle.require_task(self.task, self.name)
        if self.model is not None:
            return self.model(config, bundle)
        from fedapp.models.build import pooled_linear_model  # lazy: reading a config needs no torch

        return pooled_linear_model(config, bundle)

    def shared_keys(self, model: nn.Module) -> list[str]:
        """Names of ``model``'s tensors that travel to and from the server, in order."""
        if self.travelling_keys is not None:
            return self.travelling_keys(model)
        from fedapp.params import shared_keys  # lazy, as in build_model

        return shared_keys(model)
