"""Networks of the personalized long-tail baselines that PooledLinearNet does not cover.

- :class:`DualHeadNet` (FedRoD): backbone -> pooled features -> generic head ``classifier``
  (shared) and personal head ``personal_head`` (local). ``forward`` gives the generic logits (the
  global model); :meth:`DualHeadNet.forward_personalized` gives generic + personal logits.
- :class:`ETFNet` (FedETF): backbone -> pooled features -> ``projection`` -> L2 normalisation ->
  fixed simplex ETF classifier scaled by a learnable ``scale``. The ETF is a non-persistent buffer
  rebuilt from the seed, so it is never in ``state_dict`` and never travels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fedapp.models.etf import simplex_etf
from fedapp.models.nets import PooledLinearNet


class DualHeadNet(PooledLinearNet):
    """PooledLinearNet plus a personal head whose logits are added to the generic ones (FedRoD)."""

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int) -> None:
        super().__init__(backbone, feature_dim, num_classes)
        self.personal_head = nn.Linear(feature_dim, num_classes)
        # Zero init: before any local training the personalized prediction is the generic one.
        nn.init.zeros_(self.personal_head.weight)
        nn.init.zeros_(self.personal_head.bias)

    def dual_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(generic logits, personalized logits)``; the personal head sees detached features and
        adds to detached generic logits, so only the generic loss trains the body and generic head."""
        features = self.features(x)
        generic = self.classifier(features)
        personalized = generic.detach() + self.personal_head(features.detach())
        return generic, personalized

    def forward_personalized(self, x: torch.Tensor) -> torch.Tensor:
        return self.dual_logits(x)[1]


class PersonalizedView(nn.Module):
    """A module whose ``forward`` is ``net.forward_personalized`` (what federated evaluation calls)."""

    def __init__(self, net: DualHeadNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_personalized(x)


class ETFNet(nn.Module):
    """Backbone -> pooled features -> linear projection -> normalise -> ``scale * W_ETF^T z``.

    ``projection_dim`` must be >= num_classes - 1 (a simplex ETF needs it); ``scale`` is FedETF's
    learnable temperature and travels with the shared model.
    """

    def __init__(
        self, backbone: nn.Module, feature_dim: int, num_classes: int, projection_dim: int,
        seed: int, scale_init: float,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection = nn.Linear(feature_dim, projection_dim)
        self.scale = nn.Parameter(torch.tensor(float(scale_init)))
        self.register_buffer("etf", simplex_etf(num_classes, projection_dim, seed), persistent=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x).mean(dim=(2, 3))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits of pooled ``features``: ``scale * W_ETF^T normalize(projection(features))``."""
        z = F.normalize(self.projection(features), dim=1)
        return self.scale * (z @ self.etf)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))


class ETFClassifierView(nn.Module):
    """``net.classify`` as a module over pooled features (to fine-tune the projection and scale
    on features computed once by the frozen backbone)."""

    def __init__(self, net: ETFNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net.classify(features)
