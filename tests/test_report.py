"""What a run directory shows a person: partition and per-client plots, report.html (also in a real
headless Chromium), TensorBoard event files, and the progress/ETA lines of runs and sweeps."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.progress import RunProgress
from fedapp.config import RunConfig
from fedapp.report import main as report_main
from fedapp.results import RunRecorder, format_seconds, load_run, progress_line
from tests.conftest import assert_finished

COUNTS = np.array([[30, 0, 5, 1], [0, 12, 0, 4], [8, 8, 8, 0]])
CLIENT_ACC = {0: {"accuracy": 0.9}, 1: {"accuracy": 0.5}, 2: {"accuracy": 0.7}}


def fake_run(run_dir: Path, tensorboard: bool = True, algorithm: str = "fedloge") -> Path:
    """A finished single-label run written through the recorder, without training anything."""
    config = dict(RunConfig().to_kebab(), algorithm=algorithm, dataset="lt-digits", tensorboard=tensorboard,
                  **{"output-dir": str(run_dir), "num-server-rounds": 2})
    recorder = RunRecorder(run_dir, config, "singlelabel", 2)
    recorder.record_partition(COUNTS, ("zero", "one", "two", "three"), COUNTS.sum(axis=0))
    for rnd, acc in ((1, 0.4), (2, 0.6)):
        recorder.start_round(rnd)
        recorder.add(rnd, test_accuracy=acc, val_accuracy=acc + 0.05, test_pm=acc + 0.1, train_loss=1.0 / rnd,
                     bytes_sent=1000, bytes_received=900, round_seconds=0.5, test_many=acc, test_medium=acc,
                     test_few=acc / 2)
        recorder.add_client_metrics(rnd, CLIENT_ACC)
        recorder.end_round(rnd)
    recorder.finish()
    return run_dir


def test_run_directory_holds_partition_clients_and_report(tmp_path):
    run_dir = fake_run(tmp_path / "run")
    partition = json.loads((run_dir / "partition.json").read_text())
    assert partition["counts"] == COUNTS.tolist() and partition["global_counts"] == [38, 20, 13, 5]
    lines = [json.loads(line) for line in (run_dir / "clients.jsonl").read_text().splitlines()]
    assert [line["round"] for line in lines] == [1, 2] and lines[-1]["clients"]["1"] == {"accuracy": 0.5}
    for name in ("partition.png", "clients.png", "accuracy.png", "pm.png", "train_loss.png"):
        with Image.open(run_dir / "plots" / name) as image:
            assert image.size[0] > 300
    page = (run_dir / "report.html").read_text()
    pngs = sorted((run_dir / "plots").glob("*.png"))
    assert page.count('src="data:image/png;base64,') == len(pngs)
    # Self-contained: nothing to fetch, nothing to run.
    assert not re.search(r'(src|href)="(http|/|\.)', page) and "<script" not in page and "<link" not in page
    # The per-client table: every client with its samples, classes held and accuracy.
    for cid, row in enumerate(COUNTS):
        cells = f"<td class=k>{cid}</td><td>{row.sum()}</td><td>{(row > 0).sum()}</td>" \
                f"<td>{CLIENT_ACC[cid]['accuracy']:.4f}</td>"
        assert cells in page
    assert "<td class=k>algorithm</td><td>fedloge</td>" in page
    run = load_run(run_dir)
    assert run["clients"]["round"] == 2 and run["partition"]["class_names"] == ["zero", "one", "two", "three"]


def test_tensorboard_scalars_and_hparams(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = fake_run(tmp_path / "run")
    assert list(run_dir.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(run_dir))
    events.Reload()
    scalars = events.Tags()["scalars"]
    for tag in ("test/accuracy", "test/pm", "val/accuracy", "train/loss", "traffic/bytes_sent",
                "time/round_seconds"):
        assert tag in scalars, tag
    assert [(e.step, round(e.value, 4)) for e in events.Scalars("test/pm")] == [(1, 0.5), (2, 0.7)]
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = events.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {h.name for h in experiment.hparam_infos} >= {"algorithm", "alpha", "class-presence-ratio",
                                                         "imbalance-factor", "dataset", "seed"}
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    assert session.session_start_info.hparams["algorithm"].string_value == "fedloge"


def test_tensorboard_false_writes_no_event_file(tmp_path):
    run_dir = fake_run(tmp_path / "run", tensorboard=False)
    assert (run_dir / "report.html").is_file() and not list(run_dir.glob("events.out.tfevents.*"))


def test_progress_line_has_an_eta():
    row = {"round": 2, "test_accuracy": 0.5, "round_seconds": 4.0, "wall_seconds": 10.0}
    assert progress_line(row, 5, "singlelabel") == "[round 2/5] accuracy=0.5000 (4.0 s, ETA 0:00:15)"
    assert format_seconds(3725) == "1:02:05"


def test_sweep_progress_counts_runs_and_estimates_the_rest(monkeypatch, capsys):
    clock = iter([100.0, 160.0, 220.0])
    monkeypatch.setattr("benchmarks.progress.time.monotonic", lambda: next(clock))
    progress = RunProgress(4, "test")
    progress.finished("a earlier", executed=False)  # 60 s elapsed, no executed run yet: no ETA
    line = progress.finished("b")  # 120 s for one executed run, 2 runs left
    progress.close()
    assert line == "[2/4] b | elapsed 0:02:00, ETA 0:04:00"
    assert "[1/4] a earlier | elapsed 0:01:00, ETA ?" in capsys.readouterr().err


def test_report_command_writes_a_comparison_page(tmp_path, capsys):
    first = fake_run(tmp_path / "a", tensorboard=False)
    second = fake_run(tmp_path / "b", tensorboard=False, algorithm="fedavg")
    page = tmp_path / "cmp" / "page.html"
    assert report_main([str(first), str(second), "--out", str(tmp_path / "cmp.png"), "--html", str(page)]) == 0
    text = page.read_text()
    assert "Comparison of 2 runs" in text and "fedavg lt-digits" in text and "fedloge lt-digits" in text
    # The comparison plot plus each run's plots, all inline.
    plots = len(list((first / "plots").glob("*.png"))) + len(list((second / "plots").glob("*.png")))
    assert text.count('src="data:image/png;base64,') == plots + 1
    assert f"page: {page.resolve()}" in capsys.readouterr().out


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def _chromium() -> str | None:
    return next((path for path in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if path), None)


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (Debian: apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    run_dir = fake_run(tmp_path / "run")
    url = (run_dir / "report.html").resolve().as_uri()
    base = [_chromium(), *CHROMIUM_FLAGS]
    dom = subprocess.run(base + [f"--user-data-dir={tmp_path / 'profile-dom'}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    # The DOM Chromium built (not the file): every plot as an img element, the tables, the client rows.
    assert len(re.findall(r'<img[^>]+src="data:image/png;base64,', dom.stdout)) == \
        len(list((run_dir / "plots").glob("*.png")))
    assert dom.stdout.count("<table>") == 3 and "<td class=\"k\">2</td><td>24</td>" in dom.stdout
    shot = tmp_path / "shot.png"
    result = subprocess.run(base + [f"--user-data-dir={tmp_path / 'profile-shot'}", "--window-size=1200,1600",
                                    f"--screenshot={shot}", url], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    assert shot.stat().st_size > 50_000
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB"))
    # Text alone is grey; the decoded plots bring colour (the heatmap's viridis, the bars' green).
    saturated = (pixels.max(axis=2).astype(int) - pixels.min(axis=2)) > 60
    assert saturated.mean() > 0.02, f"only {saturated.mean():.1%} of the screenshot is coloured"


@pytest.mark.slow
def test_two_round_run_leaves_report_tensorboard_and_partition(tmp_path):
    from fedapp.inprocess import run_inprocess

    run_dir = run_inprocess({"algorithm": "fedncalign-ml", "preset": "ml-digits-skewed", "num-server-rounds": 2,
                             "local-epochs": 1, "output-dir": str(tmp_path / "run")}, 4)
    assert_finished(run_dir, 2)
    assert (run_dir / "report.html").is_file() and list(run_dir.glob("events.out.tfevents.*"))
    partition = json.loads((run_dir / "partition.json").read_text())
    counts = np.asarray(partition["counts"])
    assert counts.shape == (4, 10) and (counts == 0).sum(axis=1).min() >= 5  # rho = 0.5: half the labels absent
    clients = load_run(run_dir)["clients"]
    assert clients["round"] == 2 and set(clients["clients"]) == {"0", "1", "2", "3"}
    assert all(0 <= v["macro_f1"] <= 1 for v in clients["clients"].values())
    assert (run_dir / "plots" / "partition.png").is_file() and (run_dir / "plots" / "clients.png").is_file()


@pytest.mark.slow
def test_simulate_no_tensorboard_flag(tmp_path):
    from fedapp.simulate import main as simulate_main

    run_dir = tmp_path / "run"
    code = simulate_main(["--engine", "inprocess", "--nodes", "2", "--no-tensorboard", "-c",
                          f"dataset='lt-digits' num-server-rounds=1 local-epochs=1 output-dir='{run_dir}'"])
    assert code == 0
    assert (run_dir / "report.html").is_file() and not list(run_dir.glob("events.out.tfevents.*"))
    assert load_run(run_dir)["config"]["tensorboard"] is False
