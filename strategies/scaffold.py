"""SCAFFOLD (Karimireddy et al., 2020, "SCAFFOLD: Stochastic Controlled Averaging for Federated
Learning"), Algorithm 1, server side.

The server keeps the model x and the server control variate c. Each round it sends (x, c) to the
sampled clients S, receives (y_k, delta c_k) from each (see :mod:`clients.scaffold`) and updates

    x <- x + server_lr * (1/|S|) * sum_{k in S} (y_k - x)
    c <- c + (|S| / N) * (1/|S|) * sum_{k in S} delta c_k

with N the number of connected clients and ``server_lr`` the run config's ``server-lr``. Means are
unweighted, as in the paper. BatchNorm running statistics are buffers, not parameters: they have
no variate and are set to the clients' (unweighted) mean.

Bytes per round, per sampled client: down = model + c, up = y + delta c; c and delta c are one
float32 array per trainable parameter, so SCAFFOLD moves about 2x FedAvg's traffic.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from flwr.common import (
    FitIns,
    FitRes,
    Parameters,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy

from clients.scaffold import ScaffoldClient
from fedapp.algorithm import Algorithm
from fedapp.options import Option
from fedapp.payload import split_payload, trainable_keys, trainable_zeros
from strategies.base import FederatedStrategy, ServerSetup


def scaffold_server_update(
    x: Sequence[np.ndarray], c: Sequence[np.ndarray], ys: Sequence[Sequence[np.ndarray]],
    delta_cs: Sequence[Sequence[np.ndarray]], num_clients: int, server_lr: float,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``(x + server_lr * mean_k(y_k - x), c + |S|/N * mean_k(delta c_k))`` over the |S| results."""
    sampled = len(ys)
    if sampled == 0 or sampled != len(delta_cs):
        raise ValueError(f"need one delta c per model update, got {sampled} and {len(delta_cs)}")
    if num_clients < sampled:
        raise ValueError(f"N={num_clients} clients cannot be fewer than the |S|={sampled} that replied")
    new_x = []
    for i, xi in enumerate(x):
        mean_delta = np.mean([np.asarray(y[i], np.float64) - xi for y in ys], axis=0)
        new_x.append((xi + server_lr * mean_delta).astype(xi.dtype))
    new_c = []
    for i, ci in enumerate(c):
        mean_delta_c = np.mean([np.asarray(d[i], np.float64) for d in delta_cs], axis=0)
        new_c.append((ci + (sampled / num_clients) * mean_delta_c).astype(np.float32))
    return new_x, new_c


class ScaffoldStrategy(FederatedStrategy):
    """Keeps c; sends (x, c), receives (y_k, delta c_k), applies the SCAFFOLD server update."""

    def __init__(self, setup: ServerSetup) -> None:
        super().__init__(setup)
        names = set(trainable_keys(setup.model, setup.keys))
        self.variate_index = [i for i, key in enumerate(setup.keys) if key in names]
        self.server_variate = trainable_zeros(setup.model, setup.keys)
        # Every update must carry y (model-shaped) and delta c (variate-shaped): validate both.
        self.reference = self.reference + [np.zeros_like(c) for c in self.server_variate]
        self.num_model_arrays = len(setup.keys)
        self.num_clients = 0

    def strategy_state(self) -> dict[str, np.ndarray]:
        """The server variate c, for checkpoints (a resumed run must not restart c from zero)."""
        return {f"c_{i}": c for i, c in enumerate(self.server_variate)}

    def load_strategy_state(self, state: dict[str, np.ndarray]) -> None:
        if len(state) != len(self.server_variate):
            raise ValueError(f"the checkpoint holds {len(state)} server-variate arrays, this model needs "
                             f"{len(self.server_variate)}")
        self.server_variate = [np.asarray(state[f"c_{i}"], dtype=np.float32) for i in range(len(state))]

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        self.num_clients = client_manager.num_available()
        self.sent_model = parameters_to_ndarrays(parameters)
        payload = ndarrays_to_parameters(self.sent_model + self.server_variate)
        return super().configure_fit(server_round, payload, client_manager)

    def aggregate_updates(self, server_round: int, results: list[tuple[ClientProxy, FitRes]]) -> list[np.ndarray]:
        x = self.sent_model
        split = [split_payload(parameters_to_ndarrays(res.parameters), self.num_model_arrays) for _, res in results]
        ys = [[model[i] for i in self.variate_index] for model, _ in split]
        delta_cs = [extra for _, extra in split]
        new_params, self.server_variate = scaffold_server_update(
            [x[i] for i in self.variate_index], self.server_variate, ys, delta_cs,
            self.num_clients, self.config.server_lr,
        )
        new_x = [np.mean([model[i] for model, _ in split], axis=0).astype(x[i].dtype) for i in range(len(x))]
        for i, value in zip(self.variate_index, new_params):
            new_x[i] = value
        return new_x


ALGORITHM = Algorithm(
    name="scaffold", display_name="SCAFFOLD", task="any", strategy=ScaffoldStrategy, client=ScaffoldClient,
    options=(
        Option("server-lr", 1.0, "SCAFFOLD: global step size eta_g of x <- x + eta_g * mean(y_k - x)",
               "a number > 0 (1 is the paper's default)", lambda v: v > 0),
        Option("scaffold-local-lr", 0.3, "SCAFFOLD: local SGD step size eta_l (replaces optimizer/lr)",
               "a number > 0", lambda v: v > 0),
        Option("scaffold-momentum", 0.9, "SCAFFOLD: heavy-ball momentum of the local SGD (0: plain SGD)",
               "a number in [0, 1)", lambda v: 0 <= v < 1),
    ),
)
