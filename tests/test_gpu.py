"""Tests that need a CUDA device (marker ``gpu``): skipped without one. Run them with ``pytest -m gpu``
on a GPU machine (``scripts/gpu_check.sh`` runs them with the GPU benchmark)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fedapp.data.files import UInt8ImageDataset
from fedapp.loops import TrainOptions, make_loader, prepare_model, resolve_device, task_loss, train_epochs
from fedapp.models.backbones import build_backbone
from fedapp.models.nets import PooledLinearNet

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _dataset(n: int = 64, size: int = 32) -> UInt8ImageDataset:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8)
    return UInt8ImageDataset(images, rng.integers(0, 10, n), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _model(options: TrainOptions, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    backbone = build_backbone("resnet18-cifar", 3)
    return prepare_model(PooledLinearNet(backbone, backbone.out_dim, 10).to(device), options)


def test_default_device_is_the_gpu_and_batches_come_pinned() -> None:
    device = resolve_device("")
    assert device.type == "cuda"
    loader = make_loader(_dataset(), 16, shuffle=True, seed=0, num_workers=1, device=device)
    assert loader.pin_memory and loader.persistent_workers
    images, targets = next(iter(loader))
    assert images.is_pinned() and targets.is_pinned()


@pytest.mark.parametrize("amp", ["off", "bf16", "fp16"])
def test_training_on_cuda_keeps_everything_on_the_device(amp: str) -> None:
    device = torch.device("cuda")
    options = TrainOptions(amp=amp, channels_last=True)
    model = _model(options, device)
    seen: list[tuple[torch.device, torch.dtype]] = []

    def loss_fn(net: nn.Module, images: torch.Tensor, targets: torch.Tensor):
        logits = net(images)
        seen.append((logits.device, logits.dtype))
        loss = nn.functional.cross_entropy(logits.float(), targets)
        return loss, {"loss": float(loss.detach())}

    before = [p.detach().clone() for p in model.parameters()]
    metrics = train_epochs(model, make_loader(_dataset(), 16, True, seed=0, num_workers=2, device=device),
                           torch.optim.SGD(model.parameters(), lr=0.01), loss_fn, 2, device, options=options)
    expected = {"off": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    assert {d.type for d, _ in seen} == {"cuda"} and {dtype for _, dtype in seen} == {expected}
    assert math.isfinite(metrics["loss"])
    assert all(p.device.type == "cuda" and p.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_bf16_tracks_fp32_on_cuda() -> None:
    device = torch.device("cuda")
    losses = {}
    for amp in ("off", "bf16"):
        options = TrainOptions(amp=amp)
        model = _model(options, device)
        metrics = train_epochs(model, make_loader(_dataset(), 16, True, seed=0, device=device),
                               torch.optim.SGD(model.parameters(), lr=0.01), task_loss("singlelabel"),
                               1, device, options=options)
        losses[amp] = metrics["loss"]
    assert abs(losses["bf16"] - losses["off"]) < 0.1


def test_one_inprocess_round_on_cuda(tmp_path: Path) -> None:
    from fedapp.inprocess import run_inprocess

    run_dir = run_inprocess({"algorithm": "fedavg", "dataset": "ml-digits", "num-server-rounds": 1, "local-epochs": 1,
                             "device": "cuda", "amp": "bf16", "channels-last": True, "num-workers": 1,
                             "checkpoint-every": 0, "output-dir": str(tmp_path / "run")}, 3)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert [r["round"] for r in rows] == [1] and rows[0]["clients_ok"] == 3
    assert math.isfinite(rows[0]["test_macro_auc"]) and math.isfinite(rows[0]["train_loss"])


def test_deterministic_runs_repeat_on_cuda(tmp_path: Path) -> None:
    from fedapp.inprocess import run_inprocess

    before = torch.are_deterministic_algorithms_enabled()
    try:
        outputs = []
        for name in ("a", "b"):
            run_dir = run_inprocess({"algorithm": "fedavg", "dataset": "lt-digits", "num-server-rounds": 1,
                                     "local-epochs": 1, "device": "cuda", "deterministic": True,
                                     "checkpoint-every": 0, "output-dir": str(tmp_path / name)}, 2)
            row = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
            outputs.append({k: v for k, v in row.items() if k.startswith(("test_", "val_", "train_"))})
        assert outputs[0] == outputs[1]
    finally:
        torch.use_deterministic_algorithms(before)
        torch.backends.cudnn.deterministic = False
