"""Algorithm name -> (strategy class, client class). Adding an algorithm = one line in ``SPECS``.

The classes are imported on first lookup, so a ClientApp process (one per message in a
deployment) imports only the algorithm its run uses, not all of them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedapp.config import ConfigError

if TYPE_CHECKING:
    from clients.base import BaseClient
    from strategies.base import FederatedStrategy


@dataclass(frozen=True)
class Algorithm:
    strategy: type[FederatedStrategy]
    client: type[BaseClient]


# name -> ("module:StrategyClass", "module:ClientClass")
SPECS: dict[str, tuple[str, str]] = {
    "fedavg": ("strategies.fedavg:FedAvgStrategy", "clients.fedavg:FedAvgClient"),
    "fedncalign-ml": ("strategies.fedncalign_ml:FedNCAlignMLStrategy", "clients.fedncalign_ml:FedNCAlignMLClient"),
    "spherefed": ("strategies.spherefed:SphereFedStrategy", "clients.spherefed:SphereFedClient"),
    "fedlgt": ("strategies.fedlgt:FedLGTStrategy", "clients.fedlgt:FedLGTClient"),
    "centralized": ("strategies.centralized:CentralizedStrategy", "clients.centralized:CentralizedClient"),
    "fedprox": ("strategies.fedprox:FedProxStrategy", "clients.fedprox:FedProxClient"),
    "scaffold": ("strategies.scaffold:ScaffoldStrategy", "clients.scaffold:ScaffoldClient"),
    "fedcurv": ("strategies.fedcurv:FedCurvStrategy", "clients.fedcurv:FedCurvClient"),
    "fedbn": ("strategies.fedbn:FedBNStrategy", "clients.fedbn:FedBNClient"),
    "fedper": ("strategies.fedper:FedPerStrategy", "clients.fedper:FedPerClient"),
    "fedrep": ("strategies.fedrep:FedRepStrategy", "clients.fedrep:FedRepClient"),
    "fedbabu": ("strategies.fedbabu:FedBABUStrategy", "clients.fedbabu:FedBABUClient"),
    "ditto": ("strategies.ditto:DittoStrategy", "clients.ditto:DittoClient"),
    "fedrod": ("strategies.fedrod:FedRoDStrategy", "clients.fedrod:FedRoDClient"),
    "fedetf": ("strategies.fedetf:FedETFStrategy", "clients.fedetf:FedETFClient"),
    "ratio-loss": ("strategies.ratio_loss:RatioLossStrategy", "clients.ratio_loss:RatioLossClient"),
    "fedloge": ("strategies.fedloge:FedLoGeStrategy", "clients.fedloge:FedLoGeClient"),
}


def _import(spec: str) -> type:
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


class AlgorithmTable(dict):
    """``name -> Algorithm`` for every name in ``SPECS``; each pair is imported on first lookup.

    An entry set explicitly (e.g. a test's replacement) wins over the spec.
    """

    def __missing__(self, name: str) -> Algorithm:
        if name not in SPECS:
            raise KeyError(name)
        strategy, client = SPECS[name]
        algorithm = self[name] = Algorithm(_import(strategy), _import(client))
        return algorithm


ALGORITHMS: dict[str, Algorithm] = AlgorithmTable()


def get_algorithm(name: str) -> Algorithm:
    """The registered pair for ``name``; unknown or not-yet-implemented names are a clear error."""
    if name not in SPECS and name not in ALGORITHMS:
        raise ConfigError(f"algorithm={name!r} is not available; available: {', '.join(sorted(SPECS))}")
    return ALGORITHMS[name]
