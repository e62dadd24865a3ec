"""FedLGT client (Liu et al., AAAI 2024, "Language-Guided Transformer for Federated Multi-Label
Classification").

Model (:class:`fedapp.models.lgt.LabelGuidedTransformer`): C-Tran's transformer encoder over the
image tokens and one token per label, each label token = fixed text embedding of the class name
(universal label embedding, shared by all clients, never sent) + a fixed label-state embedding
(unknown / negative / positive).

Local training, per batch (client-aware masked label embedding, CA-MLE):
1. label mask training: a random subset of each sample's labels (up to ``fedlgt-max-known-fraction``
   of them) is revealed to the model as known states, the rest are unknown;
2. the global model received this round (a frozen copy, every label unknown) scores the batch;
   labels it is uncertain about, |p_g - 1/2| <= ``fedlgt-uncertainty-margin``, are made unknown;
3. loss = BCE over the unknown labels.
Everything trainable travels (FedAvg). Multi-label datasets only.

Left out (see the strategy's docstring): the authors' optional loss-weighted aggregation.
Different from the authors' code: CA-MLE is applied to every sample of a batch (their loop touches
only the first sample), the "positive"/"negative" state texts are not swapped, and the unknown-label
BCE is averaged rather than summed (keeps one learning rate meaningful across methods).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from clients.base import BaseClient
from fedapp.models.lgt import (
    UNKNOWN,
    client_aware_states,
    sample_known_mask,
    uncertain_labels,
    unknown_label_bce,
)


class FedLGTClient(BaseClient):
    """Label mask training guided by the global model's uncertainty (CA-MLE)."""

    def local_train(self, config: dict[str, Any]) -> dict[str, float]:
        # The global model of this round guides CA-MLE; it is frozen and never updated locally.
        self.guide = copy.deepcopy(self.model).eval().requires_grad_(False)
        return super().local_train(config)

    def loss(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor):
        known = sample_known_mask(len(images), targets.shape[1], self.config.fedlgt_max_known_fraction, images.device)
        with torch.no_grad():
            global_probs = torch.sigmoid(self.guide(images))
        states = client_aware_states(targets, known, global_probs, self.config.fedlgt_uncertainty_margin)
        loss = unknown_label_bce(model(images, states), targets, states)
        return loss, {
            "loss": float(loss.detach()),
            "unknown_fraction": float((states == UNKNOWN).float().mean()),
            "uncertain_fraction": float(uncertain_labels(global_probs, self.config.fedlgt_uncertainty_margin).float().mean()),
        }
