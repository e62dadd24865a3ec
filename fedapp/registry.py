"""Algorithm name -> (strategy class, client class). Adding an algorithm = one line here."""

from __future__ import annotations

from dataclasses import dataclass

from clients.base import BaseClient
from clients.fedavg import FedAvgClient
from fedapp.config import ConfigError
from strategies.base import FederatedStrategy
from strategies.fedavg import FedAvgStrategy


@dataclass(frozen=True)
class Algorithm:
    strategy: type[FederatedStrategy]
    client: type[BaseClient]


ALGORITHMS: dict[str, Algorithm] = {
    "fedavg": Algorithm(FedAvgStrategy, FedAvgClient),
}


def get_algorithm(name: str) -> Algorithm:
    """The registered pair for ``name``; unknown or not-yet-implemented names are a clear error."""
    if name not in ALGORITHMS:
        raise ConfigError(f"algorithm={name!r} is not available; available: {', '.join(sorted(ALGORITHMS))}")
    return ALGORITHMS[name]
