"""FedNCAlign-ML client (paper: "Neural Collapse-Inspired Multi-Label Federated Learning under
Label-Distribution Skew", ``papers/fedncalign-ml.txt``; model and losses in :mod:`fedapp.models`).

Model (:func:`fedapp.models.multilabel.build_multilabel_net`): backbone feature map -> tokens ->
LADM (4-head cross-attention, the C simplex-ETF columns as class queries) -> one feature h_c per
class -> fixed ETF classifier logit_c = <h_c, w_c>. The ETF is a non-persistent buffer rebuilt
from ``seed`` by every party: it is never in ``state_dict`` and never travels.

Local objective (Eq. 9), each term returned for logging as ``train_bce`` / ``train_rejection`` /
``train_contrastive`` (and the total as ``train_loss``)::

    L = L_BCE + lambda_rejection * L_rej(tau) + lambda_contrastive * L_con(T)

Ablation switches (run config, paper Tables 7-8): ``use-ladm`` (false: pooled feature),
``classifier`` (``etf`` fixed, or ``fc`` learnable group-wise linear; no LADM + fc is exactly the
FedAvg model), ``ladm-queries`` (``etf`` fixed, ``etf-learnable``, ``random-learnable``; learnable
queries are parameters and travel). The regularizers align features to the ETF prototypes, so
they need ``classifier=etf`` and LADM (checked in :class:`fedapp.config.RunConfig`).
"""

from __future__ import annotations

import torch
from torch import nn

from clients.base import BaseClient
from fedapp.config import RunConfig
from fedapp.data.base import DatasetBundle
from fedapp.models.backbones import build_backbone
from fedapp.models.multilabel import MultiLabelNet, build_multilabel_net
from fedapp.models.multilabel_losses import fedncalign_loss

LADM_HEADS = 4  # fixed by the paper ("4-head cross-attention")


class FedNCAlignMLClient(BaseClient):
    """Local training of the ETF/LADM network with BCE + rejection + contrastive losses."""

    @classmethod
    def build_model(cls, config: RunConfig, bundle: DatasetBundle) -> nn.Module:
        bundle.require_task("multilabel", "fedncalign-ml")
        backbone = build_backbone(config.backbone, bundle.input_shape[0], config.pretrained_path)
        return build_multilabel_net(
            backbone, backbone.out_dim, bundle.num_classes, use_ladm=config.use_ladm,
            classifier=config.classifier, query_mode=config.ladm_queries, etf_seed=config.seed,
            num_heads=LADM_HEADS,
        )

    def loss(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor):
        cfg = self.config
        logits, features = model.forward_with_features(images)
        prototypes = model.prototypes if isinstance(model, MultiLabelNet) else None
        total, terms = fedncalign_loss(
            logits, features, targets, prototypes, cfg.lambda_rejection, cfg.lambda_contrastive,
            cfg.tau, cfg.temperature,
        )
        return total, {"loss": float(total.detach()), **{name: float(value) for name, value in terms.items()}}
