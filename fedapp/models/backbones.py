"""Feature extractors. Every backbone maps images ``(B, C_in, H, W)`` to a spatial feature map
``(B, out_dim, H', W')``: heads either pool it or, like LADM, attend over its H'*W' tokens.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Three 3x3 conv blocks for tiny inputs (8x8 and 8x16 digits); stride 2 in the last block only.

    An 8x16 input gives a 4x8 map of ``out_dim`` channels (32 tokens), an 8x8 input a 4x4 map.
    """

    def __init__(self, in_channels: int = 1, width: int = 16, out_dim: int = 64) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width * 2, 3, padding=1), nn.BatchNorm2d(width * 2), nn.ReLU(inplace=True),
            nn.Conv2d(width * 2, out_dim, 3, stride=2, padding=1), nn.BatchNorm2d(out_dim), nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class ResNet18Backbone(nn.Module):
    """torchvision ResNet-18 without its pooling and FC layers (``out_dim`` = 512).

    ``cifar_stem`` swaps the 7x7/stride-2 stem and max-pool for a 3x3/stride-1 conv, the usual
    choice for 32x32 inputs. ``pretrained_path`` loads ImageNet weights from a local ``.pth`` file
    (a torchvision ``resnet18`` state dict); nothing is ever downloaded.
    """

    def __init__(self, in_channels: int = 3, cifar_stem: bool = False, pretrained_path: str = "") -> None:
        super().__init__()
        # Imported here: torchvision.models pulls in torch._dynamo, seconds per ClientApp process
        # for runs that never build a ResNet.
        from torchvision.models import resnet18

        net = resnet18(weights=None)
        if pretrained_path:
            net.load_state_dict(load_resnet18_weights(pretrained_path))
        if cifar_stem:
            net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.out_dim = 512
        self.features = nn.Sequential(
            net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def load_resnet18_weights(path: str) -> dict[str, torch.Tensor]:
    """Read a torchvision ResNet-18 state dict from ``path``, with errors that say what is wrong."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"pretrained-path={path!r} does not exist; give a local torchvision resnet18 state dict "
            "(e.g. resnet18-f37072fd.pth) or leave pretrained-path empty to train from scratch"
        )
    from torchvision.models import resnet18  # lazy, as in ResNet18Backbone: torchvision.models is slow to import

    state = torch.load(file, map_location="cpu", weights_only=True)
    expected = set(resnet18(weights=None).state_dict())
    if not isinstance(state, dict) or set(state) != expected:
        raise ValueError(f"pretrained-path={path!r} is not a torchvision resnet18 state dict")
    return state


def build_backbone(name: str, in_channels: int, pretrained_path: str = "") -> nn.Module:
    """``cnn`` (SmallCNN), ``resnet18`` (stock stem) or ``resnet18-cifar`` (3x3 stem, no max-pool)."""
    if name == "cnn":
        if pretrained_path:
            raise ValueError("pretrained-path applies to resnet18 backbones only, not backbone='cnn'")
        return SmallCNN(in_channels)
    if name in ("resnet18", "resnet18-cifar"):
        return ResNet18Backbone(in_channels, cifar_stem=name == "resnet18-cifar", pretrained_path=pretrained_path)
    raise ValueError(f"backbone={name!r} is unknown; allowed: 'cnn', 'resnet18', 'resnet18-cifar'")
