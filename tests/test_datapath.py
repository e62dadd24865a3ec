"""The training data path and step options: batched reads, workers, decode cache, amp, channels-last,
compile, determinism. The runs before these existed are the reference (``tests/data/inprocess_golden.json``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from fedapp.config import ConfigError, RunConfig
from fedapp.data.base import ArrayDataset, IndexedSubset
from fedapp.data.files import (
    CompositeDataset,
    ImageFileDataset,
    MissingDataFileError,
    UInt8ImageDataset,
    composite_plan,
    decode_image_file,
    load_image,
)
from fedapp.inprocess import run_inprocess
from fedapp.loops import (
    TrainOptions,
    _BatchReader,
    _EpochSampler,
    _whole_batch,
    make_loader,
    prepare_model,
    set_determinism,
    train_epochs,
)

GOLDEN = json.loads((Path(__file__).parent / "data" / "inprocess_golden.json").read_text())["runs"]
# The runs of tests/data/inprocess_golden.json (3 nodes, checkpoints off). They were recorded with
# the defaults of that time; FedNCAlign-ML and FedLoGe now default to their authors' formulations,
# so the keys below select the earlier behaviour (the data path must not change either).
GOLDEN_RUNS = {
    "fedavg-ml-digits": {"algorithm": "fedavg", "dataset": "ml-digits"},
    "fedncalign-ml-digits": {"algorithm": "fedncalign-ml", "dataset": "ml-digits",
                             "fedncalign-formulation": "mean-cosine"},
    "fedloge-lt-digits": {"algorithm": "fedloge", "dataset": "lt-digits", "fedloge-head-momentum": 0.9,
                          "fedloge-head-weight-decay": 0.01, "shot-split": "thirds", "dirichlet-mode": "cut",
                          "local-test-size": 100, "augment": "none"},
}
TIMING = {"wall_seconds", "round_seconds", "fit_seconds", "evaluate_seconds"}


def _rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def _golden_run(tmp_path: Path, name: str, **extra) -> list[dict]:
    overrides = {**GOLDEN_RUNS[name], "num-server-rounds": 2, "local-epochs": 1, "checkpoint-every": 0,
                 "output-dir": str(tmp_path / name), **extra}
    return _rows(run_inprocess(overrides, 3))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(GOLDEN_RUNS))
def test_runs_reproduce_the_metrics_from_before_the_new_data_path(tmp_path: Path, name: str) -> None:
    assert _golden_run(tmp_path, name) == GOLDEN[name]  # every metric, bit for bit (exact float equality)


@pytest.mark.slow
def test_one_data_worker_gives_the_same_run(tmp_path: Path) -> None:
    assert _golden_run(tmp_path, "fedavg-ml-digits", **{"num-workers": 1}) == GOLDEN["fedavg-ml-digits"]


@pytest.mark.slow
def test_bf16_channels_last_runs_a_round_on_cpu(tmp_path: Path) -> None:
    rows = _golden_run(tmp_path, "fedavg-ml-digits", amp="bf16", **{"channels-last": True})
    reference = GOLDEN["fedavg-ml-digits"]
    assert [r["round"] for r in rows] == [1, 2] and all(r["clients_ok"] == 3 for r in rows)
    assert all(np.isfinite(r[k]) for r in rows for k in ("train_loss", "test_macro_auc", "val_macro_auc"))
    assert rows[-1]["train_loss"] != reference[-1]["train_loss"]  # bf16 really ran: not the fp32 numbers
    assert abs(rows[-1]["test_macro_auc"] - reference[-1]["test_macro_auc"]) < 0.05  # and learns as fp32 does


# ------------------------------------------------------------------ batched reads and worker order
def _uint8(rng: np.random.Generator, n: int, size: int = 6) -> np.ndarray:
    return rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8)


def _datasets() -> dict[str, torch.utils.data.Dataset]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 37)
    images = _uint8(rng, 37)
    sources, multi_hot = composite_plan(labels, 4, 0.5, 2, seed=3)
    uint8 = UInt8ImageDataset(images, labels, (0.4, 0.5, 0.6), (0.2, 0.3, 0.25))
    return {
        "uint8": uint8,
        "composite": CompositeDataset(images, sources, multi_hot, (0.4, 0.5, 0.6), (0.2, 0.3, 0.25)),
        "array": ArrayDataset(rng.normal(size=(37, 1, 8, 8)).astype(np.float32), labels),
        "subset": IndexedSubset(uint8, rng.permutation(37)[:29]),
    }


def _batches(loader: DataLoader, epochs: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [batch for _ in range(epochs) for batch in loader]


def _assert_same_batches(got: list, expected: list) -> None:
    assert len(got) == len(expected)
    for (images, targets), (ref_images, ref_targets) in zip(got, expected):
        assert images.dtype == ref_images.dtype and torch.equal(images, ref_images)
        assert targets.dtype == ref_targets.dtype and torch.equal(targets, ref_targets)


@pytest.mark.parametrize("kind", ["uint8", "composite", "array", "subset"])
def test_batched_loader_equals_the_per_item_dataloader(kind: str) -> None:
    dataset = _datasets()[kind]
    # The loader this project used before: per-item reads, default collation, shuffling generator.
    reference = DataLoader(dataset, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(11))
    expected = _batches(reference)
    _assert_same_batches(_batches(make_loader(dataset, 8, shuffle=True, seed=11)), expected)
    unshuffled = _batches(DataLoader(dataset, batch_size=8), epochs=1)
    _assert_same_batches(_batches(make_loader(dataset, 8, shuffle=False), epochs=1), unshuffled)


def test_worker_processes_and_persistent_workers_keep_the_order() -> None:
    dataset = _datasets()["composite"]
    expected = _batches(make_loader(dataset, 8, shuffle=True, seed=5), epochs=3)
    _assert_same_batches(_batches(make_loader(dataset, 8, shuffle=True, seed=5, num_workers=2), epochs=3), expected)
    # What make_loader builds on CUDA (persistent workers skip DataLoader's per-epoch draw), on CPU.
    persistent = DataLoader(
        _BatchReader(dataset), batch_size=8, sampler=_EpochSampler(dataset, generator=torch.Generator().manual_seed(5)),
        generator=torch.Generator().manual_seed(5), collate_fn=_whole_batch, num_workers=1, persistent_workers=True,
    )
    _assert_same_batches(_batches(persistent, epochs=3), expected)


def test_negative_worker_count_is_refused() -> None:
    with pytest.raises(ValueError, match="num-workers=-1"):
        make_loader(_datasets()["array"], 4, shuffle=False, num_workers=-1)


# ------------------------------------------------------------------ image files
def _photo(path: Path, width: int, height: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, width)[None, :, None] + np.linspace(0, 50, height)[:, None, None]
    pixels = (ramp + rng.integers(0, 6, (height, width, 3))).clip(0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.mark.parametrize("resize", ["squash", "center-crop"])
@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_torchvision_decode_matches_pil_within_one_level(tmp_path: Path, resize: str, suffix: str) -> None:
    path = tmp_path / f"a{suffix}"
    _photo(path, 61, 40)
    pil = torch.from_numpy(np.array(load_image(path, 24, resize))).permute(2, 0, 1)
    decoded = decode_image_file(path, 24, resize)
    assert decoded.shape == (3, 24, 24) and decoded.dtype == torch.uint8
    assert int((decoded.int() - pil.int()).abs().max()) <= 1


def test_gray_files_are_replicated_to_three_channels(tmp_path: Path) -> None:
    path = tmp_path / "g.png"
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8), mode="L").save(path)
    decoded = decode_image_file(path, 8, grayscale=True)
    assert decoded.shape == (3, 8, 8) and torch.equal(decoded[0], decoded[2])
    assert torch.equal(decoded[1], torch.arange(64, dtype=torch.uint8).reshape(8, 8))


def test_image_files_are_decoded_once_per_process_when_they_fit(tmp_path: Path) -> None:
    paths = [tmp_path / f"{i}.png" for i in range(5)]
    for i, path in enumerate(paths):
        _photo(path, 20 + i, 16, seed=i)
    cached = ImageFileDataset(paths, np.arange(5), 8)
    uncached = ImageFileDataset(paths, np.arange(5), 8, cache_bytes=0)
    assert cached.cached and not uncached.cached
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the three files are decoded on two threads
    try:
        first_images, first_targets = cached.get_batch([3, 0, 4])
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(first_images, torch.stack([uncached[i][0] for i in (3, 0, 4)]))
    assert first_targets.tolist() == [3, 0, 4]
    for path in paths:
        path.unlink()  # the cache serves what was decoded; nothing else can be read now
    assert torch.equal(cached.get_batch([3, 0, 4])[0], first_images)
    with pytest.raises(MissingDataFileError, match="1.png"):
        cached[1]
    with pytest.raises(MissingDataFileError, match="3.png"):
        uncached[3]


# ------------------------------------------------------------------ amp, channels-last, compile
class _TinyConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def _train(options: TrainOptions, seed: int = 0, epochs: int = 2) -> tuple[nn.Module, dict, list]:
    torch.manual_seed(seed)
    model = prepare_model(_TinyConvNet(), options)
    dataset = _datasets()["uint8"]
    seen: list[tuple[torch.dtype, bool]] = []

    def loss_fn(net: nn.Module, images: torch.Tensor, targets: torch.Tensor):
        logits = net(images)
        seen.append((logits.dtype, images.is_contiguous(memory_format=torch.channels_last)))
        loss = nn.functional.cross_entropy(logits.float(), targets)
        return loss, {"loss": float(loss.detach())}

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    metrics = train_epochs(model, make_loader(dataset, 8, True, seed=1), optimizer, loss_fn, epochs,
                           torch.device("cpu"), options=options)
    return model, metrics, seen


def test_bf16_autocast_trains_in_bfloat16_on_cpu() -> None:
    fp32_model, fp32_metrics, fp32_seen = _train(TrainOptions())
    model, metrics, seen = _train(TrainOptions(amp="bf16"))
    assert {dtype for dtype, _ in fp32_seen} == {torch.float32}
    assert {dtype for dtype, _ in seen} == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    assert np.isfinite(metrics["loss"]) and metrics["loss"] != fp32_metrics["loss"]
    assert abs(metrics["loss"] - fp32_metrics["loss"]) < 0.05


def test_fp16_uses_a_grad_scaler_and_tracks_fp32() -> None:
    options = TrainOptions(amp="fp16")
    scaler = options.grad_scaler(torch.device("cpu"))
    assert isinstance(scaler, torch.amp.GradScaler) and TrainOptions(amp="bf16").grad_scaler(torch.device("cpu")) is None
    fp32_model, fp32_metrics, _ = _train(TrainOptions())
    model, metrics, seen = _train(options)
    assert {dtype for dtype, _ in seen} == {torch.float16}
    assert abs(metrics["loss"] - fp32_metrics["loss"]) < 0.05
    for ours, ref in zip(model.parameters(), fp32_model.parameters()):
        assert torch.allclose(ours, ref, atol=2e-2)


def test_channels_last_changes_layout_not_results() -> None:
    ref_model, ref_metrics, ref_seen = _train(TrainOptions())
    model, metrics, seen = _train(TrainOptions(channels_last=True))
    assert model.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(nhwc for _, nhwc in seen) and not any(nhwc for _, nhwc in ref_seen)
    assert abs(metrics["loss"] - ref_metrics["loss"]) < 1e-5
    for ours, ref in zip(model.parameters(), ref_model.parameters()):
        assert torch.allclose(ours, ref, atol=1e-5)


@pytest.mark.slow
def test_compile_keeps_parameter_names_and_results() -> None:
    ref_model, ref_metrics, _ = _train(TrainOptions(), epochs=1)
    model, metrics, _ = _train(TrainOptions(compile=True), epochs=1)
    assert list(model.state_dict()) == list(ref_model.state_dict())  # what travels keeps its names
    assert abs(metrics["loss"] - ref_metrics["loss"]) < 1e-4
    for ours, ref in zip(model.parameters(), ref_model.parameters()):
        assert torch.allclose(ours, ref, atol=1e-4)


def test_deterministic_sets_torch_and_cudnn_flags() -> None:
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark)
    try:
        set_determinism(True, torch.device("cuda"))
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        set_determinism(False, torch.device("cuda"))
        assert not torch.are_deterministic_algorithms_enabled()
        assert not torch.backends.cudnn.deterministic and torch.backends.cudnn.benchmark
        set_determinism(False, torch.device("cpu"))
        assert not torch.backends.cudnn.benchmark
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1], before[2]


def test_new_keys_are_validated() -> None:
    config = RunConfig.from_kebab({"amp": "bf16", "channels-last": True, "compile": True, "num-workers": 2,
                                   "deterministic": True})
    assert TrainOptions.from_config(config) == TrainOptions("bf16", True, True, 2)
    with pytest.raises(ConfigError, match="amp='fp8' is not allowed; allowed: off, bf16 or fp16"):
        RunConfig.from_kebab({"amp": "fp8"})
    with pytest.raises(ConfigError, match="num-workers=-1 is not allowed"):
        RunConfig.from_kebab({"num-workers": -1})
    with pytest.raises(ConfigError, match="channels-last='yes' is not allowed; allowed: true or false"):
        RunConfig.from_kebab({"channels-last": "yes"})
