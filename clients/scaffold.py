"""SCAFFOLD client (Karimireddy et al., 2020, "SCAFFOLD: Stochastic Controlled Averaging for
Federated Learning"), Algorithm 1 with option II.

Client k receives the global model x and the server variate c, starts from y = x and takes K
local steps of SGD on the corrected gradient (the paper's plain SGD step; momentum below)

    y <- y - lr_l * (g_k(y) - c_k + c)

then updates its own variate (option II) and sends back y and the variate's change:

    c_k+ = c_k - c + (x - y) / (K * lr_l),      delta c_k = c_k+ - c_k

c_k lives only in ``context.state`` (flattened, key ``scaffold-client-variate``); only delta c_k
travels. Variates exist for the trainable shared parameters, not for BatchNorm's running
statistics (buffers, not optimised).

Optimizer: option II reads (x - y) / (K * lr_l) as the mean corrected gradient, which holds for
plain SGD steps, so SCAFFOLD ignores ``optimizer``, ``lr`` and ``momentum`` and uses its own SGD
at ``scaffold-local-lr`` with heavy-ball momentum ``scaffold-momentum`` (0 = the paper's plain
SGD). The correction enters the gradient before the momentum buffer,

    m <- mu * m + (g_k(y) - c_k + c),        y <- y - lr_l * m,

and with momentum mu a constant direction moves y by lr_l / (1 - mu) per step in the steady
state, so option II becomes c_k+ = c_k - c + (1 - mu) * (x - y) / (K * lr_l) (exact for mu = 0).
Why momentum: on ml-digits plain SGD needs far more steps than a 30-round budget gives (FedAvg
with plain SGD stays near macro-F1 0 even on IID data; with momentum 0.9 it trains), see the
README. ``weight-decay`` is decoupled (p <- p * (1 - lr_l * wd), as AdamW applies the run's
``weight-decay``): as an L2 term at SGD step sizes the AdamW value 0.01 shrinks the weights ~30x
faster than under AdamW and stops training (ml-digits-skewed, seed 0: macro-F1 0.0 after 30 rounds).
The decay is part of x - y, so the variates include it.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np
import torch

from clients.base import BaseClient
from fedapp.loops import train_epochs
from fedapp.payload import (
    flatten,
    split_payload,
    trainable_keys,
    trainable_zeros,
    unflatten,
)

CLIENT_VARIATE_KEY = "scaffold-client-variate"


class ScaffoldSGD(torch.optim.Optimizer):
    """SGD on ``grad + correction`` with heavy-ball momentum and decoupled weight decay; counts K.

    ``correction[i]`` is ``c - c_k`` for the i-th parameter (Algorithm 1, line 10). One step:
    ``m <- momentum * m + grad + correction`` (``m = direction`` when momentum is 0, the paper's
    plain SGD), ``p <- p * (1 - lr * weight_decay) - lr * m``.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float, correction: Sequence[torch.Tensor],
                 weight_decay: float = 0.0, momentum: float = 0.0) -> None:
        params = list(params)
        if len(params) != len(correction):
            raise ValueError(f"{len(params)} parameters but {len(correction)} correction tensors")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"SCAFFOLD momentum must be in [0, 1), got {momentum}")
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum))
        self.correction = list(correction)
        self.steps = 0

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        group = self.param_groups[0]
        for param, correction in zip(group["params"], self.correction):
            grad = param.grad if param.grad is not None else torch.zeros_like(param)
            direction = grad + correction
            if group["momentum"]:
                state = self.state[param]
                if "buffer" not in state:
                    state["buffer"] = direction.clone()
                else:
                    state["buffer"].mul_(group["momentum"]).add_(direction)
                direction = state["buffer"]
            if group["weight_decay"]:
                param.mul_(1.0 - group["lr"] * group["weight_decay"])  # decoupled, as AdamW's
            param.add_(direction, alpha=-group["lr"])
        self.steps += 1
        return None


def scaffold_variate_update(
    client_variate: Sequence[np.ndarray], server_variate: Sequence[np.ndarray],
    x: Sequence[np.ndarray], y: Sequence[np.ndarray], steps: int, lr: float, momentum: float = 0.0,
) -> list[np.ndarray]:
    """Option II: ``c_k+ = c_k - c + (1 - momentum) * (x - y) / (K * lr)`` for each tensor."""
    if steps < 1:
        raise ValueError(f"SCAFFOLD needs at least one local step, got K={steps}")
    scale = (1.0 - momentum) / (steps * lr)
    return [
        (np.asarray(ck, np.float64) - np.asarray(c, np.float64)
         + (np.asarray(xi, np.float64) - np.asarray(yi, np.float64)) * scale).astype(np.float32)
        for ck, c, xi, yi in zip(client_variate, server_variate, x, y)
    ]


class ScaffoldClient(BaseClient):
    """Corrected local SGD; keeps c_k private and sends y followed by delta c_k."""

    def load_private_arrays(self) -> None:
        named = dict(self.model.named_parameters())
        self.variate_params = [named[name] for name in trainable_keys(self.model, self.keys)]  # variate order
        zeros = trainable_zeros(self.model, self.keys)
        stored = self.load_state_array(CLIENT_VARIATE_KEY)
        self.client_variate = zeros if stored is None else unflatten(stored, zeros)
        self.variate_delta = [np.zeros_like(z) for z in zeros]

    def private_arrays(self) -> dict[str, np.ndarray]:
        return {CLIENT_VARIATE_KEY: flatten(self.client_variate)}

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]):
        model_arrays, server_variate = split_payload(parameters, len(self.keys))
        if len(server_variate) != len(self.client_variate):
            raise ValueError(f"SCAFFOLD expects {len(self.client_variate)} server-variate arrays after the "
                             f"model, got {len(server_variate)}")
        self.server_variate = server_variate
        arrays, num_examples, metrics = super().fit(model_arrays, config)
        return arrays + self.variate_delta, num_examples, metrics

    def local_train(self, config: dict[str, Any]) -> dict[str, float]:
        x = [p.detach().cpu().numpy().copy() for p in self.variate_params]
        correction = [
            torch.as_tensor(c - ck, device=self.device)
            for c, ck in zip(self.server_variate, self.client_variate)
        ]
        lr, momentum = self.config.scaffold_local_lr, self.config.scaffold_momentum
        optimizer = ScaffoldSGD(self.variate_params, lr, correction, self.config.weight_decay, momentum)
        metrics = train_epochs(self.model, self.train_loader(config), optimizer, self.loss,
                               self.config.local_epochs, self.device, options=self.train_options)
        y = [p.detach().cpu().numpy() for p in self.variate_params]
        updated = scaffold_variate_update(self.client_variate, self.server_variate, x, y, optimizer.steps, lr,
                                          momentum)
        self.variate_delta = [new - old for new, old in zip(updated, self.client_variate)]
        self.client_variate = updated
        return metrics
