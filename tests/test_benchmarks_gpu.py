"""The GPU benchmark's CPU smoke run, the preset estimator on its JSON, and the data path benchmark."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import datapath, gpu, preset_time


def _last_json(capsys: pytest.CaptureFixture[str]) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.slow
def test_gpu_benchmark_dry_run_and_preset_estimates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu.main(["--dry-run", "--out-dir", str(tmp_path / "bench")]) == 0
    result = _last_json(capsys)
    assert result == json.loads((tmp_path / "bench" / "gpu.json").read_text())
    assert result["dry_run"] and result["machine"]["cpus"] >= 1
    measured = [row for row in result["rows"] if "skipped" not in row]
    skipped = [row for row in result["rows"] if "skipped" in row]
    assert {(r["method"], r["dataset"]) for r in measured} == {
        ("fedavg", "ml-digits"), ("fedncalign-ml", "ml-digits"), ("fedavg", "cifar10-lt"),
        ("fedloge", "cifar10-lt"), ("fedavg", "voc2012"), ("fedncalign-ml", "voc2012")}
    assert {r["method"] for r in skipped} == {"fedloge"} and all(r["image_size"] == 224 for r in skipped)
    assert {(r["amp"], r["channels_last"]) for r in measured if r["image_size"] == 32} == {("off", False), ("off", True)}
    assert {(r["amp"], r["channels_last"]) for r in measured if r["image_size"] == 224} == {("off", False), ("bf16", True)}
    for row in measured:
        assert row["rounds"] == 1 and row["final_metrics_finite"]
        assert row["train_images_per_round"] > 0 and row["eval_images_per_round"] > 0
        assert math.isclose(row["images_per_second"], row["train_images_per_round"] / row["fit_seconds"], rel_tol=0.01)
    assert [s["returncode"] for s in result["simulation"]] == [0]
    assert result["simulation"][0]["mean_round_seconds"] > 0

    # The estimator reads that JSON: a preset of each benchmark dataset gets a figure.
    assert preset_time.main([str(tmp_path / "bench" / "gpu.json"), "--markdown", str(tmp_path / "t.md")]) == 0
    estimates = {(e["preset"], e["method"]): e for e in _last_json(capsys)["estimates"]}
    voc = estimates[("voc2012-s1", "fedncalign-ml")]
    row = next(r for r in measured if (r["method"], r["dataset"], r["amp"]) == ("fedncalign-ml", "voc2012", "off"))
    expected = (5_717 * 0.9 / row["images_per_second"]
                + (5_823 + 5_717 * 0.1) * row["evaluate_seconds"] / row["eval_images_per_round"])
    assert math.isclose(voc["fp32"]["round_seconds"], expected, rel_tol=0.01)
    assert math.isclose(voc["fp32"]["hours_100_rounds"], expected * 100 / 3600, abs_tol=0.006)
    assert estimates[("cifar10-lt-if100-alpha0.5", "fedloge")]["fp32"]["from"] == "fedloge@cifar10-lt"
    assert estimates[("imagenet-lt", "fedrod")]["fp32"]["from"] == "fedavg@voc2012"  # a baseline: FedAvg's row
    assert "| voc2012-s1 | fedncalign-ml | 10 |" in (tmp_path / "t.md").read_text()


def test_longtail_train_sizes_match_the_cifar_lt_papers() -> None:
    assert preset_time.longtail_train_size(10, 5000, 100) == 12_406  # Cao et al. (2019), CIFAR-10-LT IF 100
    assert preset_time.longtail_train_size(100, 500, 100) == 10_847


@pytest.mark.slow
def test_datapath_benchmark_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "datapath.json"
    assert datapath.main(["--cifar-per-batch", "20", "--folder-images", "20", "--workers", "0", "1",
                          "--train-steps", "1", "--batch", "4", "--out", str(out)]) == 0
    result = _last_json(capsys)
    assert result == json.loads(out.read_text())
    assert {(r["dataset"], r["workers"]) for r in result["rows"]} == {
        ("cifar-32", 0), ("cifar-32", 1), ("folder-224", 0), ("folder-224", 1)}
    assert all(r["images_per_second"] > 0 for r in result["rows"])
    assert set(result["train_images_per_second"]) == {"cifar-32", "folder-224"}
    verdict = result["bottleneck_at_default_workers"]["folder-224"]
    data = next(r for r in result["rows"] if r["dataset"] == "folder-224" and r["workers"] == 0)["images_per_second"]
    assert verdict["bottleneck"] == ("data path" if data < result["train_images_per_second"]["folder-224"] else "model")


def test_preset_estimates_from_a_benchmark_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def row(method: str, dataset: str, amp: str, channels_last: bool, ips: float) -> dict:
        return {"method": method, "dataset": dataset, "amp": amp, "channels_last": channels_last,
                "images_per_second": ips, "eval_images_per_round": 1000, "evaluate_seconds": 0.5}

    rows = [row(m, d, amp, cl, ips * (2 if amp == "bf16" else 1))
            for m, d, ips in (("fedavg", "ml-cifar10", 4000.0), ("fedncalign-ml", "ml-cifar10", 3000.0),
                              ("fedavg", "cifar10-lt", 8000.0), ("fedloge", "cifar10-lt", 7000.0),
                              ("fedavg", "voc2012", 1000.0), ("fedncalign-ml", "voc2012", 800.0))
            for amp, cl in (("off", False), ("bf16", True))]
    path = tmp_path / "gpu.json"
    path.write_text(json.dumps({"machine": {"gpu": "test"}, "rows": rows}))
    assert preset_time.main([str(path)]) == 0
    estimates = {(e["preset"], e["method"]): e for e in _last_json(capsys)["estimates"]}
    voc = estimates[("voc2012-s1", "fedncalign-ml")]
    assert voc["train_images_per_round"] == round(5_717 * 0.9)
    expected = 5_717 * 0.9 / 800 + (5_823 + 571.7) / 2000  # train / train_ips + eval / eval_ips
    assert math.isclose(voc["fp32"]["round_seconds"], expected, rel_tol=1e-3)
    bf16 = 5_717 * 0.9 / 1600 + (5_823 + 571.7) / 2000  # the bf16 row trains twice as fast
    assert math.isclose(voc["bf16_channels_last"]["round_seconds"], bf16, rel_tol=1e-3)
    assert math.isclose(voc["bf16_channels_last"]["hours_100_rounds"], bf16 * 100 / 3600, abs_tol=0.006)
    lt = estimates[("cifar10-lt-if100-alpha0.5", "fedloge")]
    assert lt["clients"] == 40 and lt["train_images_per_round"] == round(12_406 * 0.9 * 5)
    assert lt["fp32"]["from"] == "fedloge@cifar10-lt"
    derma = estimates[("ml-dermamnist-s1", "fedavg")]  # 28x56 scaled from the 32x64 row
    assert derma["fp32"]["from"] == "fedavg@ml-cifar10 x1.31 px"
    assert estimates[("imagenet-lt", "fedrod")]["fp32"]["from"] == "fedavg@voc2012"
