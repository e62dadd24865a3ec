"""FedCurv (Shoham et al., 2019, "Overcoming Forgetting in Federated Learning on Non-IID Data"),
server side.

Clients minimise ``L_s(theta) + lambda * sum_{j != s} sum_i F_{j,i} (theta_i - w_{j,i})^2`` (see
:mod:`clients.fedcurv`). The server aggregates the model as FedAvg,

    w^{t+1} = sum_k (n_k / n) * w_k^{t+1},

and, as the paper describes, keeps only sums of the clients' curvature terms of the last round,

    U = sum_k F_k,   V = sum_k F_k * w_k,   W = sum_k sum_i F_{k,i} w_{k,i}^2,

which it sends with the next model (U, V as arrays; W and the round they come from in the config)
so that each client subtracts its own term and penalises towards the others.

Bytes per round, per sampled client, with M the model's shared arrays and P its trainable
parameters (float32): round 1 down = M (no sums yet), later rounds down = M + 2P (model, U, V);
up = M + 2P every round (w, F, F * w), plus one scalar metric. For the default CNN (BatchNorm
buffers are the only non-parameters) that is about 3x FedAvg's traffic.
"""

from __future__ import annotations

import numpy as np
from flwr.common import (
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy.aggregate import aggregate

from clients.fedcurv import CONST_METRIC, SUMS_CONST, SUMS_ROUND, FedCurvClient
from fedapp.algorithm import Algorithm
from fedapp.options import Option
from fedapp.payload import split_payload, trainable_zeros
from strategies.base import FederatedStrategy, ServerSetup


def fedcurv_sums(
    fishers: list[list[np.ndarray]], fisher_weights: list[list[np.ndarray]], consts: list[float]
) -> tuple[list[np.ndarray], list[np.ndarray], float]:
    """``(U, V, W)``: element-wise sums of the clients' F_k and F_k * w_k, and the sum of their scalars."""
    if not fishers or len(fishers) != len(fisher_weights) or len(fishers) != len(consts):
        raise ValueError(f"need matching non-empty lists, got {len(fishers)}, {len(fisher_weights)}, {len(consts)}")
    u = [np.sum([np.asarray(f[i], np.float64) for f in fishers], axis=0).astype(np.float32)
         for i in range(len(fishers[0]))]
    v = [np.sum([np.asarray(g[i], np.float64) for g in fisher_weights], axis=0).astype(np.float32)
         for i in range(len(fisher_weights[0]))]
    return u, v, float(sum(consts))


class FedCurvStrategy(FederatedStrategy):
    """FedAvg on the model; sums and redistributes the clients' Fisher terms."""

    def __init__(self, setup: ServerSetup) -> None:
        super().__init__(setup)
        zeros = trainable_zeros(setup.model, setup.keys)
        # Every update carries w (model-shaped), F and F * w (parameter-shaped): validate all three.
        self.reference = self.reference + zeros + [z.copy() for z in zeros]
        self.num_model_arrays = len(setup.keys)
        self.num_curv_arrays = len(zeros)
        self.sums: tuple[list[np.ndarray], list[np.ndarray], float] | None = None
        self.sums_round = 0

    def strategy_state(self) -> dict[str, np.ndarray]:
        """U, V, W and their round, for checkpoints (empty before the first aggregation)."""
        if self.sums is None:
            return {}
        u, v, w = self.sums
        state = {f"u_{i}": a for i, a in enumerate(u)} | {f"v_{i}": a for i, a in enumerate(v)}
        return state | {"const": np.array([w]), "sums_round": np.array([self.sums_round])}

    def load_strategy_state(self, state: dict[str, np.ndarray]) -> None:
        if not state:
            return
        count = self.num_curv_arrays
        self.sums = ([np.asarray(state[f"u_{i}"], np.float32) for i in range(count)],
                     [np.asarray(state[f"v_{i}"], np.float32) for i in range(count)],
                     float(state["const"][0]))
        self.sums_round = int(state["sums_round"][0])

    def fit_config(self, server_round: int) -> dict[str, Scalar]:
        config = super().fit_config(server_round)
        if self.sums is not None:
            config.update({SUMS_ROUND: self.sums_round, SUMS_CONST: self.sums[2]})
        return config

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        if self.sums is not None:
            payload = parameters_to_ndarrays(parameters) + self.sums[0] + self.sums[1]
            parameters = ndarrays_to_parameters(payload)
        return super().configure_fit(server_round, parameters, client_manager)

    def aggregate_updates(self, server_round: int, results: list[tuple[ClientProxy, FitRes]]) -> list[np.ndarray]:
        models, fishers, fisher_weights, consts = [], [], [], []
        for _, res in results:
            model, curv = split_payload(parameters_to_ndarrays(res.parameters), self.num_model_arrays)
            models.append((model, res.num_examples))
            fishers.append(curv[: self.num_curv_arrays])
            fisher_weights.append(curv[self.num_curv_arrays:])
            if CONST_METRIC not in res.metrics:
                raise ValueError(f"a FedCurv update lacks the metric {CONST_METRIC!r} (its sum(F * w^2))")
            consts.append(float(res.metrics[CONST_METRIC]))
        self.sums = fedcurv_sums(fishers, fisher_weights, consts)
        self.sums_round = server_round
        return [np.asarray(a, dtype=ref.dtype) for a, ref in zip(aggregate(models), self.reference)]


ALGORITHM = Algorithm(
    name="fedcurv", display_name="FedCurv", task="any", strategy=FedCurvStrategy, client=FedCurvClient,
    options=(
        Option("fedcurv-lambda", 1.0, "FedCurv: weight of sum_j sum_i F_ji (w_i - w_ji)^2",
               "a number >= 0 (0 makes FedCurv FedAvg)", lambda v: v >= 0),
    ),
)
