"""Plain classification networks shared by FedAvg and most baselines."""

from __future__ import annotations

import torch
from torch import nn


class PooledLinearNet(nn.Module):
    """Backbone -> global average pooling -> linear classifier: the standard baseline model.

    ``forward`` returns logits ``(B, num_classes)``; ``forward_with_features`` also returns the
    pooled features ``(B, feature_dim)``. The head is ``self.classifier`` so that personalized
    methods can keep it local.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x).mean(dim=(2, 3))

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(x)
        return self.classifier(features), features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
