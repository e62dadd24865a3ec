"""FedLoGe client (Xiao et al., ICLR 2024, "FedLoGe: Joint Local and Generic Federated Learning
under Long-tailed Data"), Algorithm 1's CLIENTUPDATE and stage 3 (LA-FR).

Model (:class:`fedapp.models.fedloge_net.FedLoGeNet`): backbone theta -> pooled features h -> the
fixed classifier W (SSE-C, rebuilt here from the seed and never sent; ``fedloge-classifier=etf``:
the dense ETF), the global auxiliary head psi and the local head phi_k. Each local step
(:func:`fedapp.models.fedloge_net.fedloge_loss`):

    theta <- theta - eta * grad_theta CE(h @ W, y)                      (line 4: W fixed)
    psi   <- psi   - eta * grad_psi   CE(psi(h), y),  h constant        (line 5: theta fixed)
    phi_k <- phi_k - eta * grad_phi   CE(phi_k(h), y)

for ``local-epochs`` epochs: theta with the run's optimizer (as every algorithm here), psi and phi_k
with SGD (the paper's optimizer) at ``fedloge-head-lr``, ``fedloge-head-momentum`` and
``fedloge-head-weight-decay`` (defaults 0.03, 0.5, 0: the authors' code, ``options.py`` and the
heads' ``torch.optim.SGD(..., lr=args.lr, momentum=args.momentum)`` in ``util/update_baseline.py``;
the paper gives no values). theta (with its BN statistics) and psi are
returned; phi_k is excluded from the shared keys, so the base client keeps it in ``context.state``.
The fit metrics add the
checksum of the W this client rebuilt (the server rejects the update if it differs from its own) and,
with ``head-aggregation=classwise`` only, the client's class counts (C integers; by default nothing
beyond what FedAvg sends leaves the client, as the paper's Appendix states).

Personalized model (federated evaluation, PM): LA-FR (Eq. 7),

    phi'_{k,c} = psi_c / ||psi_c||_2 * ||phi_{k,c}||_2

with psi the global head just received (``la-fr=false``: the raw phi_k), then, with
``la-fr-finetune-epochs`` > 0, a fine-tuning of that head alone on the local training data (theta
frozen; Algorithm 1 line 12; evaluation only, the stored phi_k is unchanged). As in Algorithm 1,
whose stage 3 runs once after round T, the fine-tune runs in the evaluation of the last round
(``num-server-rounds``) only; earlier rounds report the PM of LA-FR without it, so the per-round
PM monitoring does not add the fine-tune's cost to every round.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from clients.base import BaseClient
from fedapp.data.base import class_counts
from fedapp.loops import make_loader, make_optimizer, task_loss, train_epochs
from fedapp.models.fedloge_net import (
    CHECKSUM_METRIC,
    CLASS_COUNTS_METRIC,
    LinearHead,
    backbone_and_head_parameters,
    encode_counts,
    fedloge_loss,
    global_classifier,
    personal_classifier,
)
from fedapp.pfl import pooled_features
from fedapp.protocol import server_round_of


class FedLoGeClient(BaseClient):
    """Backbone against the fixed SSE-C, global and local heads on its features; LA-FR personal head."""

    def loss(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor):
        return fedloge_loss(model, images, targets)

    def local_train(self, config: dict[str, Any]) -> dict[str, float]:
        """``local-epochs`` of Algorithm 1: theta with the run's optimizer, psi and phi_k with SGD.

        The heads use SGD (the paper's optimizer; ``fedloge-head-lr``, ``fedloge-head-momentum``,
        ``fedloge-head-weight-decay``) whatever ``optimizer`` says: GA-FR and LA-FR read class cardinality from the heads' row norms, which
        gradient descent on CE produces (rare and absent classes get small gradients) and Adam's
        per-coordinate step normalisation erases. theta follows the run's optimizer, as in every
        other algorithm here, so the comparison with FedAvg changes the method, not the optimizer.
        Measured (lt-digits IF=50, seed 0, 30 rounds, training data only): Spearman correlation of
        ||phi_kc|| with client k's class counts +0.92 with SGD, -0.47 with AdamW heads.
        """
        cfg = self.config
        theta, head_params = backbone_and_head_parameters(self.model)
        optimizer = OptimizerChain([
            self.make_optimizer(theta),
            self.head_optimizer(head_params),
        ])
        return train_epochs(self.model, self.train_loader(config), optimizer, self.loss, cfg.local_epochs, self.device,
                            options=self.train_options)

    def head_optimizer(self, params) -> torch.optim.Optimizer:
        """SGD for psi and phi_k (and the LA-FR fine-tune): ``fedloge-head-lr``, ``-momentum``, ``-weight-decay``.

        The defaults are the authors' (lr 0.03, momentum 0.5, no weight decay); before they were keys
        the heads used the run's ``momentum`` and ``weight-decay`` (0.9 and 0.01 by default), which
        ``fedloge-head-momentum=0.9 fedloge-head-weight-decay=0.01`` reproduces.
        """
        cfg = self.config
        return make_optimizer(
            params, "sgd", cfg.fedloge_head_lr, cfg.fedloge_head_weight_decay, cfg.fedloge_head_momentum
        )

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]):
        arrays, num_examples, metrics = super().fit(parameters, config)
        metrics[CHECKSUM_METRIC] = self.model.fixed_checksum
        if self.config.head_aggregation == "classwise":  # only then does the server learn the class counts
            metrics[CLASS_COUNTS_METRIC] = encode_counts(class_counts(self.train_set.labels, self.bundle.num_classes))
        return arrays, num_examples, metrics

    # ----------------------------------------------------------- personalization
    def personal_head(self, finetune: bool = True) -> torch.Tensor:
        """The personal class vectors ``(C, d)``: LA-FR (or raw phi_k), then the optional fine-tune
        (when ``finetune`` and ``la-fr-finetune-epochs`` > 0)."""
        head = personal_classifier(self.model, self.config.la_fr)
        if finetune and self.config.la_fr_finetune_epochs > 0:
            head = self.finetune_head(head)
        return head

    def finetune_head(self, head: torch.Tensor) -> torch.Tensor:
        """``la-fr-finetune-epochs`` of CE on the local training data, only the head trains (SGD, as
        Algorithm 1 line 12 and the heads' training). theta is frozen, so the pooled features are
        computed once (eval mode: global BN statistics).
        """
        features, labels = pooled_features(self.model, self.train_set, self.device, self.config.eval_batch_size)
        linear = nn.Linear(head.shape[1], head.shape[0], bias=False).to(self.device)
        with torch.no_grad():
            linear.weight.copy_(head)
        seed = self.config.seed * 1_000_003 + self.partition_id
        loader = make_loader(TensorDataset(features, labels), self.config.batch_size, shuffle=True, seed=seed)
        train_epochs(
            linear, loader, self.head_optimizer(linear.parameters()), task_loss("singlelabel"),
            self.config.la_fr_finetune_epochs, self.device,
        )
        return linear.weight.detach().clone()

    def personalized_model(self) -> nn.Module:
        return LinearHead(self.model, self.personal_head())

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]):
        """PM on the local test set, plus the ablation variants from the same features.

        ``accuracy`` is the configured personal model; ``accuracy_la_fr`` LA-FR without fine-tuning,
        ``accuracy_local_head`` the raw phi_k, ``accuracy_global`` the global model (as the server
        evaluates it) on this client's local test set.
        """
        if self.local_test_set is None:
            raise RuntimeError(f"dataset {self.bundle.name!r} has no local test sets")
        self.receive(parameters, config)
        features, labels = pooled_features(self.model, self.local_test_set, self.device, self.config.eval_batch_size)
        last_round = server_round_of(config) >= self.config.num_server_rounds
        heads = {
            "accuracy": self.personal_head(finetune=last_round),  # Algorithm 1 stage 3: after round T
            "accuracy_la_fr": personal_classifier(self.model, realign=True),
            "accuracy_local_head": personal_classifier(self.model, realign=False),
            "accuracy_global": global_classifier(self.model, self.config.global_head, self.config.ga_fr),
        }
        metrics = {name: head_accuracy(features, labels, head) for name, head in heads.items()}
        return 1.0 - metrics["accuracy"], len(self.local_test_set), metrics


class OptimizerChain:
    """Several optimizers over disjoint parameters, stepped together (what ``train_epochs`` calls)."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()


def head_accuracy(features: torch.Tensor, labels: torch.Tensor, head: torch.Tensor) -> float:
    """Top-1 accuracy of the class vectors ``head`` (C x d) on pooled ``features``."""
    predictions = F.linear(features, head.to(features.device)).argmax(dim=1)
    return float((predictions == labels).float().mean())
