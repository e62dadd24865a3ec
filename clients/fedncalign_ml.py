"""FedNCAlign-ML client (paper: "Neural Collapse-Inspired Multi-Label Federated Learning under
Label-Distribution Skew", ``papers/fedncalign-ml.txt``; model and losses in :mod:`fedapp.models`).

Model (:func:`fedapp.models.multilabel.build_multilabel_net`): backbone feature map -> tokens ->
LADM (4-head cross-attention, the C simplex-ETF columns as class queries) -> one feature h_c per
class -> fixed ETF classifier. The ETF is a non-persistent buffer rebuilt from ``seed`` by every
party: it is never in ``state_dict`` and never travels.

``fedncalign-formulation`` chooses the classifier head and the loss
(:mod:`fedapp.models.multilabel_losses` has the equations):

- ``authors`` (default), as the authors' released code: logit_c = s <h_c, w_c> + b_c with a
  learnable scale s (initialised to 10) and per-class bias b (0), both trained and averaged like the
  rest of the model; per-sample sums of BCE, the top-K sigmoid rejection (margin ``tau``) and the
  prototype InfoNCE (temperature ``temperature``);
- ``mean-cosine``, this project's earlier reading: logit_c = <h_c, w_c> (s = 1, fixed, no bias);
  mean BCE, mean cosine-hinge rejection, mean InfoNCE.

Local objective (Eq. 9), each term returned unweighted for logging as ``train_bce`` /
``train_rejection`` / ``train_contrastive`` (and the weighted total as ``train_loss``)::

    L = L_BCE + f_rej(t) lambda_rejection L_rej + f_con(t) lambda_contrastive L_con

where f = 1, or with ``fedncalign-warmup`` the authors' ramps over the rounds
(:func:`~fedapp.models.multilabel_losses.warmup_factors`).

Not taken from the authors' trainer: the optimizer. Theirs is AdamW (betas 0.9/0.98, no weight
decay on parameters named ``bias``) with a linear warm-up/decay schedule; here every algorithm uses
the run's ``optimizer`` / ``lr`` / ``weight-decay`` on all parameters, so that the comparison with
the baselines differs only in the method.

Ablation switches (run config, paper Tables 7-8): ``use-ladm`` (false: pooled feature),
``classifier`` (``etf`` fixed, or ``fc`` learnable group-wise linear; no LADM + fc is exactly the
FedAvg model), ``ladm-queries`` (``etf`` fixed, ``etf-learnable``, ``random-learnable``; learnable
queries are parameters and travel). The regularizers align features to the ETF prototypes, so
they need ``classifier=etf`` and LADM (checked in :class:`fedapp.config.RunConfig`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from clients.base import BaseClient
from fedapp.models.multilabel import ETFClassifier, MultiLabelNet
from fedapp.models.multilabel_losses import (
    authors_loss,
    mean_cosine_loss,
    warmup_factors,
)
from fedapp.protocol import SERVER_ROUND_KEY


class FedNCAlignMLClient(BaseClient):
    """Local training of the ETF/LADM network with BCE + rejection + contrastive losses."""

    warmup: tuple[float, float] = (1.0, 1.0)  # (f_rej, f_con) of the round being trained

    def local_train(self, config: dict[str, Any]) -> dict[str, float]:
        if self.config.fedncalign_warmup:
            self.warmup = warmup_factors(int(config.get(SERVER_ROUND_KEY, 1)), self.config.num_server_rounds)
        return super().local_train(config)

    def loss(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor):
        cfg = self.config
        logits, features = model.forward_with_features(images)
        prototypes = model.prototypes if isinstance(model, MultiLabelNet) else None
        if cfg.fedncalign_formulation == "authors":
            head = getattr(model, "classifier", None)
            class_logits = None
            if isinstance(head, ETFClassifier) and features.dim() == 3 and cfg.lambda_rejection > 0:
                class_logits = head.class_logits(features)  # (B, C, C): every h_c against every class
            total, terms = authors_loss(
                logits, class_logits, features, targets, prototypes, cfg.lambda_rejection,
                cfg.lambda_contrastive, cfg.tau, cfg.temperature, self.warmup,
            )
        else:
            total, terms = mean_cosine_loss(
                logits, features, targets, prototypes, cfg.lambda_rejection, cfg.lambda_contrastive,
                cfg.tau, cfg.temperature, self.warmup,
            )
        return total, {"loss": float(total.detach()), **{name: float(value) for name, value in terms.items()}}
