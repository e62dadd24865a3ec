"""Backbones: a local ResNet-18 state dict loads; anything else is refused with the key named."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import resnet18

from fedapp.models.backbones import build_backbone, load_resnet18_weights


def test_pretrained_resnet18_weights_load_and_wrong_files_are_refused(tmp_path):
    good = tmp_path / "resnet18.pth"
    reference = resnet18(weights=None).state_dict()
    torch.save(reference, good)
    state = load_resnet18_weights(str(good))
    assert set(state) == set(reference) and torch.equal(state["conv1.weight"], reference["conv1.weight"])
    backbone = build_backbone("resnet18", 3, str(good))
    assert backbone.eval()(torch.zeros(1, 3, 64, 64)).shape[1] == 512
    wrong = tmp_path / "wrong.pth"
    torch.save({"weight": torch.zeros(2)}, wrong)
    with pytest.raises(ValueError, match="is not a torchvision resnet18 state dict"):
        load_resnet18_weights(str(wrong))
    with pytest.raises(FileNotFoundError, match="pretrained-path='/nonexistent.pth' does not exist"):
        load_resnet18_weights("/nonexistent.pth")
