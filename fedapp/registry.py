"""Algorithm name -> (strategy class, client class). Adding an algorithm = one line here."""

from __future__ import annotations

from dataclasses import dataclass

from clients.base import BaseClient
from clients.centralized import CentralizedClient
from clients.fedavg import FedAvgClient
from clients.fedncalign_ml import FedNCAlignMLClient
from clients.fedlgt import FedLGTClient
from clients.spherefed import SphereFedClient
from clients.fedcurv import FedCurvClient
from clients.fedprox import FedProxClient
from clients.scaffold import ScaffoldClient
from clients.ditto import DittoClient
from clients.fedbabu import FedBABUClient
from clients.fedbn import FedBNClient
from clients.fedetf import FedETFClient
from clients.fedloge import FedLoGeClient
from clients.fedper import FedPerClient
from clients.fedrep import FedRepClient
from clients.fedrod import FedRoDClient
from clients.ratio_loss import RatioLossClient
from fedapp.config import ConfigError
from strategies.base import FederatedStrategy
from strategies.ditto import DittoStrategy
from strategies.fedbabu import FedBABUStrategy
from strategies.fedbn import FedBNStrategy
from strategies.fedetf import FedETFStrategy
from strategies.fedloge import FedLoGeStrategy
from strategies.fedper import FedPerStrategy
from strategies.fedrep import FedRepStrategy
from strategies.fedrod import FedRoDStrategy
from strategies.ratio_loss import RatioLossStrategy
from strategies.centralized import CentralizedStrategy
from strategies.fedavg import FedAvgStrategy
from strategies.fedncalign_ml import FedNCAlignMLStrategy
from strategies.fedlgt import FedLGTStrategy
from strategies.spherefed import SphereFedStrategy
from strategies.fedcurv import FedCurvStrategy
from strategies.fedprox import FedProxStrategy
from strategies.scaffold import ScaffoldStrategy


@dataclass(frozen=True)
class Algorithm:
    strategy: type[FederatedStrategy]
    client: type[BaseClient]


ALGORITHMS: dict[str, Algorithm] = {
    "fedavg": Algorithm(FedAvgStrategy, FedAvgClient),
    "fedncalign-ml": Algorithm(FedNCAlignMLStrategy, FedNCAlignMLClient),
    "spherefed": Algorithm(SphereFedStrategy, SphereFedClient),
    "fedlgt": Algorithm(FedLGTStrategy, FedLGTClient),
    "centralized": Algorithm(CentralizedStrategy, CentralizedClient),
    "fedprox": Algorithm(FedProxStrategy, FedProxClient),
    "scaffold": Algorithm(ScaffoldStrategy, ScaffoldClient),
    "fedcurv": Algorithm(FedCurvStrategy, FedCurvClient),
    "fedbn": Algorithm(FedBNStrategy, FedBNClient),
    "fedper": Algorithm(FedPerStrategy, FedPerClient),
    "fedrep": Algorithm(FedRepStrategy, FedRepClient),
    "fedbabu": Algorithm(FedBABUStrategy, FedBABUClient),
    "ditto": Algorithm(DittoStrategy, DittoClient),
    "fedrod": Algorithm(FedRoDStrategy, FedRoDClient),
    "fedetf": Algorithm(FedETFStrategy, FedETFClient),
    "ratio-loss": Algorithm(RatioLossStrategy, RatioLossClient),
    "fedloge": Algorithm(FedLoGeStrategy, FedLoGeClient),
}


def get_algorithm(name: str) -> Algorithm:
    """The registered pair for ``name``; unknown or not-yet-implemented names are a clear error."""
    if name not in ALGORITHMS:
        raise ConfigError(f"algorithm={name!r} is not available; available: {', '.join(sorted(ALGORITHMS))}")
    return ALGORITHMS[name]
