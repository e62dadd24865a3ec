"""FedETF client (Li et al., 2023, "No Fear of Classifier Biases: Neural Collapse Inspired
Federated Learning with Synthetic and Fixed Classifier").

Model (:class:`fedapp.models.pfl_nets.ETFNet`): backbone -> pooled features -> projection ->
z = normalised projection -> logits = beta * W_ETF^T z, with W_ETF a fixed simplex ETF (rebuilt
from the seed, never sent) and beta a learnable temperature (``fedetf-scale-init`` at start).
Local objective: the balanced loss with the client's class counts n_k,

    L_k = -log( n_{k,y} exp(beta w_y^T z) / sum_c n_{k,c} exp(beta w_c^T z) ),

i.e. :func:`fedapp.pfl.balanced_softmax_loss` on the ETF logits. Backbone, projection and beta
travel (FedAvg). Personalization (evaluation only): a copy of the global model fine-tunes the
projection and beta for ``finetune-epochs`` on local data with plain cross-entropy (the local
test set follows the local label distribution, so the prior correction is dropped), backbone and
ETF frozen. GM: the global model with the ETF classifier.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.data import TensorDataset

from clients.base import BaseClient
from fedapp.data.base import class_counts
from fedapp.loops import make_loader, task_loss, train_epochs
from fedapp.models.pfl_nets import ETFClassifierView
from fedapp.pfl import balanced_softmax_loss, pooled_features, train_only

FINETUNED = ("projection.", "scale")


class FedETFClient(BaseClient):
    """Balanced loss against a fixed ETF; projection + temperature fine-tuned for personalization."""

    def loss(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor):
        counts = class_counts(self.train_set.labels, self.bundle.num_classes)
        loss = balanced_softmax_loss(model(images), targets, counts)
        return loss, {"loss": float(loss.detach())}

    def personalized_model(self) -> nn.Module:
        """A copy of the global model with projection and temperature fine-tuned on local data.

        The backbone is frozen, so its pooled features are computed once (eval mode: its BN
        statistics stay the global ones) and the projection and scale train on them.
        """
        model = copy.deepcopy(self.model)
        if self.config.finetune_epochs == 0:
            return model
        features, labels = pooled_features(model, self.train_set, self.device, self.config.eval_batch_size)
        seed = self.config.seed * 1_000_003 + self.partition_id
        loader = make_loader(TensorDataset(features, labels), self.config.batch_size, shuffle=True, seed=seed)
        view = ETFClassifierView(model)
        with train_only(model, lambda name: name.startswith(FINETUNED)) as params:
            train_epochs(
                view, loader, self.make_optimizer(params), task_loss("singlelabel"),
                self.config.finetune_epochs, self.device,
            )
        return model
