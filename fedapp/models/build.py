"""The default network of an algorithm: a backbone, global average pooling and a linear classifier."""

from __future__ import annotations

from typing import Any

from torch import nn

from fedapp.models.backbones import build_backbone
from fedapp.models.nets import PooledLinearNet


def pooled_linear_model(config: Any, bundle: Any) -> nn.Module:
    """``PooledLinearNet`` over ``config.backbone`` for ``bundle``'s input channels and classes."""
    backbone = build_backbone(config.backbone, bundle.input_shape[0], config.pretrained_path)
    return PooledLinearNet(backbone, backbone.out_dim, bundle.num_classes)
