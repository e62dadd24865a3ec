"""FedCurv client (Shoham et al., 2019, "Overcoming Forgetting in Federated Learning on Non-IID
Data"): local training with an EWC-style penalty towards the other clients' last models.

Local objective of client s in round t, over the other clients j of round t-1 with their last
weights w_j and diagonal Fisher information F_j:

    L_s(theta) + lambda * sum_{j != s} sum_i F_{j,i} * (theta_i - w_{j,i})^2

Expanding the square, the penalty needs only three server-side sums (the paper's exchange):

    sum_j F_j (theta - w_j)^2 = U * theta^2 - 2 * V * theta + W,
    U = sum_j F_j,   V = sum_j F_j * w_j,   W = sum_j sum_i F_{j,i} w_{j,i}^2

so after training each client sends its weights w, its diagonal Fisher F and F * w (plus the
scalar sum(F * w^2) as a metric); the server sums them over the round's clients and sends U, V
(arrays) and W (a scalar in the config) back with the next model; each client subtracts its own
contribution, kept in ``context.state``, if it was in those sums. The penalty and the Fisher cover
the trainable shared parameters (BatchNorm running statistics are buffers).

Fisher: the diagonal *empirical* Fisher, the mean over the client's training samples of the squared
per-sample gradient of the sample's negative log-likelihood at the trained weights (model in eval
mode): sum over classes of BCE for multi-label data, cross-entropy for single-label data. The
run's optimizer (AdamW by default) minimises the penalised objective, as for every baseline.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.utils.data import Dataset

from clients.base import BaseClient
from fedapp.data.base import Task
from fedapp.loops import make_loader
from fedapp.payload import (
    flatten,
    split_payload,
    trainable_keys,
    trainable_zeros,
    unflatten,
)
from fedapp.protocol import server_round_of

OWN_FISHER_KEY = "fedcurv-own-fisher"
OWN_FISHER_WEIGHTS_KEY = "fedcurv-own-fisher-weights"
OWN_META_KEY = "fedcurv-own-meta"  # [round the contribution was made in, sum(F * w^2)]
CONST_METRIC = "fedcurv_const"  # the client's sum(F * w^2), summed by the server into W
SUMS_ROUND = "fedcurv-sums-round"  # config: the round whose contributions U, V, W sum
SUMS_CONST = "fedcurv-const"  # config: W


def fedcurv_penalty(
    params: Sequence[torch.Tensor], fisher_sum: Sequence[torch.Tensor],
    fisher_weight_sum: Sequence[torch.Tensor], const: float,
) -> torch.Tensor:
    """``sum_j sum_i F_ji (theta_i - w_ji)^2`` from ``U = sum F_j``, ``V = sum F_j w_j``, ``W``.

    Its gradient is ``2 * (U * theta - V)``.
    """
    total = torch.as_tensor(float(const), device=params[0].device if params else None)
    for theta, u, v in zip(params, fisher_sum, fisher_weight_sum):
        total = total + torch.sum(u * theta * theta) - 2.0 * torch.sum(v * theta)
    return total


def sample_nll(task: Task, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of one sample: summed BCE (multi-label) or cross-entropy."""
    if task == "multilabel":
        return F.binary_cross_entropy_with_logits(logits, target, reduction="sum")
    return F.cross_entropy(logits.unsqueeze(0), target.unsqueeze(0))


def diagonal_fisher(
    model: nn.Module, names: Sequence[str], dataset: Dataset, task: Task, device: torch.device,
    batch_size: int = 64,
) -> list[torch.Tensor]:
    """Mean over ``dataset`` of squared per-sample gradients of the NLL, for parameters ``names``."""
    was_training = model.training
    model.eval()  # BatchNorm uses its running statistics: no per-batch coupling, buffers untouched
    params = {name: p.detach() for name, p in model.named_parameters() if name in set(names)}
    buffers = {name: b.detach() for name, b in model.named_buffers()}

    def nll(weights: dict[str, torch.Tensor], image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, (weights, buffers), (image.unsqueeze(0),))[0]
        return sample_nll(task, logits, target)

    per_sample_grads = vmap(grad(nll), in_dims=(None, 0, 0))
    sums = {name: torch.zeros_like(p) for name, p in params.items()}
    count = 0
    for images, targets in make_loader(dataset, batch_size, shuffle=False):
        grads = per_sample_grads(params, images.to(device), targets.to(device))
        for name in sums:
            sums[name] += torch.sum(grads[name] ** 2, dim=0)
        count += len(images)
    model.train(was_training)
    if count == 0:
        raise ValueError("cannot estimate the Fisher information of an empty dataset")
    return [sums[name] / count for name in names]


class FedCurvClient(BaseClient):
    """Task loss + lambda * Fisher-weighted distance to the other clients' last models."""

    def load_private_arrays(self) -> None:
        self.curv_names = trainable_keys(self.model, self.keys)
        self.curv_params = [dict(self.model.named_parameters())[name] for name in self.curv_names]
        zeros = trainable_zeros(self.model, self.keys)
        fisher = self.load_state_array(OWN_FISHER_KEY)
        fisher_weights = self.load_state_array(OWN_FISHER_WEIGHTS_KEY)
        meta = self.load_state_array(OWN_META_KEY)
        self.own_fisher = None if fisher is None else unflatten(fisher, zeros)
        self.own_fisher_weights = None if fisher_weights is None else unflatten(fisher_weights, zeros)
        self.own_round, self.own_const = (None, 0.0) if meta is None else (int(meta[0]), float(meta[1]))
        self.penalty_terms: tuple[list[torch.Tensor], list[torch.Tensor], float] | None = None

    def private_arrays(self) -> dict[str, np.ndarray]:
        if self.own_fisher is None:
            return {}
        return {
            OWN_FISHER_KEY: flatten(self.own_fisher),
            OWN_FISHER_WEIGHTS_KEY: flatten(self.own_fisher_weights),
            OWN_META_KEY: np.array([self.own_round, self.own_const], dtype=np.float64),
        }

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]):
        model_arrays, sums = split_payload(parameters, len(self.keys))
        self.penalty_terms = self.others_terms(sums, config) if sums else None
        arrays, num_examples, metrics = super().fit(model_arrays, config)
        metrics[CONST_METRIC] = self.own_const
        return arrays + self.own_fisher + self.own_fisher_weights, num_examples, metrics

    def others_terms(self, sums: list[np.ndarray], config: dict[str, Any]):
        """U, V, W of the *other* clients: the server's sums minus this client's own contribution."""
        count = len(self.curv_names)
        if len(sums) != 2 * count:
            raise ValueError(f"FedCurv expects 2 x {count} Fisher-sum arrays after the model, got {len(sums)}")
        u, v, w = [s.astype(np.float32) for s in sums[:count]], [s.astype(np.float32) for s in sums[count:]], float(config[SUMS_CONST])
        if self.own_fisher is not None and self.own_round == int(config[SUMS_ROUND]):
            u = [ui - fi for ui, fi in zip(u, self.own_fisher)]
            v = [vi - gi for vi, gi in zip(v, self.own_fisher_weights)]
            w -= self.own_const
        # U is a sum of non-negative terms: clear the float rounding residue of the subtraction.
        u = [np.maximum(ui, 0.0) for ui in u]
        w = max(w, 0.0)
        device = self.device
        return [torch.as_tensor(a, device=device) for a in u], [torch.as_tensor(a, device=device) for a in v], w

    def loss(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor):
        task, terms = super().loss(model, images, targets)
        if self.penalty_terms is None:
            return task, terms
        penalty = fedcurv_penalty(self.curv_params, *self.penalty_terms)
        terms["fedcurv_penalty"] = float(penalty.detach())
        return task + self.config.fedcurv_lambda * penalty, terms

    def local_train(self, config: dict[str, Any]) -> dict[str, float]:
        metrics = super().local_train(config)
        fisher = diagonal_fisher(self.model, self.curv_names, self.train_set, self.bundle.task, self.device,
                                 self.config.batch_size)
        weights = [p.detach() for p in self.curv_params]
        self.own_fisher = [f.cpu().numpy() for f in fisher]
        self.own_fisher_weights = [(f * w).cpu().numpy() for f, w in zip(fisher, weights)]
        self.own_const = float(sum(torch.sum(f * w * w) for f, w in zip(fisher, weights)))
        self.own_round = server_round_of(config)
        return metrics
