"""The table runner's tuning mode (validation only, never the test split) and its failure paths:
resume from a checkpoint, Ctrl-C, runs marked failed or interrupted, a bad --out."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import fedapp.data as data_module
from fedapp.results import RunRecorder
from fedapp.tables import main as tables_main
from fedapp.tables.run import run_sweep
from fedapp.tables.tuning import parse_grid, plan_tuning, select

SETTINGS = ["ml-digits-skewed", "lt-digits-if50-alpha0.5"]  # multi-label, and single-label with local test sets
TUNE = ["--algorithms", "fedavg,fedprox", "--grid", "lr=0.003,0.1", "--tune-seed", "100", "--seeds", "1",
        "--rounds", "1", "--nodes", "3", "-c", "local-epochs=1"]
CACHES = (data_module._hold_out_cached, data_module._federate_cached)


class PoisonedTestSplit:
    """A test split whose labels are shuffled and whose samples cannot be read (each attempt is counted)."""

    def __init__(self, real) -> None:
        self.labels = np.random.default_rng(0).permutation(np.asarray(real.labels))
        self.length = len(real)
        self.reads = 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index):
        self.reads += 1
        raise RuntimeError("the test split was read")

    @property
    def images(self):
        self.reads += 1
        raise RuntimeError("the test split was read")


def tune_only(out: Path) -> dict:
    """Plan, run and select the tuning phase of SETTINGS; the selections, scores and validation rows."""
    plan = plan_tuning(SETTINGS, ["fedavg", "fedprox"], parse_grid("lr=0.003,0.1"), {}, 100, [0], 1, out,
                       {"local-epochs": 1})
    assert run_sweep(plan.specs, 3, "inprocess") == []
    rows = [[json.loads(line) for line in (spec.run_dir / "metrics.jsonl").read_text().splitlines()]
            for spec in plan.specs]
    selections = select(plan)
    return {"selected": {key: sel.values for key, sel in selections.items()},
            "scores": {key: sel.scores for key, sel in selections.items()}, "rows": rows}


@pytest.mark.slow
def test_tuning_never_reads_the_test_split_and_selects_the_same(tmp_path, monkeypatch):
    clean = tune_only(tmp_path / "clean")
    original = data_module._load_cached
    splits: list[PoisonedTestSplit] = []

    def poisoned_loader(*key):
        bundle = original(*key)
        splits.append(PoisonedTestSplit(bundle.test))
        return dataclasses.replace(bundle, test=splits[-1])

    try:
        for cache in CACHES:
            cache.cache_clear()
        monkeypatch.setattr(data_module, "_load_cached", poisoned_loader)
        poisoned = tune_only(tmp_path / "poisoned")
    finally:
        monkeypatch.undo()
        for cache in CACHES:  # no poisoned split may outlive this test in the caches
            cache.cache_clear()
    assert splits and sum(split.reads for split in splits) == 0
    assert poisoned["selected"] == clean["selected"] and poisoned["scores"] == clean["scores"]
    validation = [[{k: v for k, v in row.items() if k.startswith("val_")} for row in rows] for rows in poisoned["rows"]]
    assert validation == [[{k: v for k, v in row.items() if k.startswith("val_")} for row in rows]
                          for rows in clean["rows"]]
    assert all(row["val_" + ("macro_auc" if "val_macro_auc" in row else "accuracy")] > 0 for rows in validation
               for row in rows)
    assert not any(key.startswith("test_") for rows in poisoned["rows"] for row in rows for key in row)


@pytest.mark.slow
def test_tuned_table_end_to_end(tmp_path, capsys):
    """Tuning then reporting: selections printed, beside each method in the table, JSON as the last line."""
    out = tmp_path / "out"
    assert tables_main(["ml-digits-skewed"] + TUNE + ["--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    last = json.loads(stdout.strip().splitlines()[-1])
    assert set(last["selected"]) == {"fedavg", "fedprox"} and last["selected_by"].startswith("val_macro_auc@final")
    assert last["budget_per_algorithm"] == {"fedavg": "2 runs x 1 rounds", "fedprox": "2 runs x 1 rounds"}
    with (out / "tuning.csv").open() as handle:
        scores = list(csv.DictReader(handle))
    for algorithm in ("fedavg", "fedprox"):
        mine = [r for r in scores if r["algorithm"] == algorithm]
        best = max(mine, key=lambda r: float(r["score"]))
        assert best["selected"] == "1" and best["point"] == f"lr={last['selected'][algorithm]['lr']}"
        lr = last["selected"][algorithm]["lr"]
        config = (out / "runs" / "ml-digits-skewed" / algorithm / "seed-0" / "config.yaml").read_text()
        assert f"lr: {lr}" in config and "evaluate-test: true" in config
        tuning_config = (out / "tune" / "ml-digits-skewed" / algorithm / "lr=0.1" / "config.yaml").read_text()
        assert "seed: 100" in tuning_config and "evaluate-test: false" in tuning_config
    table = (out / "table.md").read_text()
    assert f"| FedAvg (lr={last['selected']['fedavg']['lr']}) |" in table and "Tuning" in table
    assert f"[tuning] ml-digits-skewed fedavg: selected lr={last['selected']['fedavg']['lr']}" in stdout


@pytest.mark.parametrize("extra, words", [
    (["--tune-seed", "0"], ["--tune-seed=0", "reporting seed"]),
    (["--grid", "lr=0.1,0.1"], ["repeats"]),
    (["--grid", "seed=1,2"], ["seed", "not allowed"]),
    (["--grid", "lrr=0.1"], ["lrr", "not a run-config key"]),
    (["--method-grid", "fedprox:mu=0.01,0.1"], ["budget", "fedavg 2", "fedprox 4"]),
    (["--tune-settings", "lt-digits-if50-alpha0.5"], ["ml-digits"]),
])
def test_bad_tuning_options_fail_before_running(tmp_path, capsys, extra, words):
    argv = ["ml-digits-skewed"] + TUNE + ["--out", str(tmp_path)]
    for index in range(0, len(extra), 2):  # replace an option given in TUNE, else add it
        if extra[index] in argv:
            argv[argv.index(extra[index]) + 1] = extra[index + 1]
        else:
            argv += extra[index:index + 2]
    assert tables_main(argv) == 2
    err = capsys.readouterr().err
    assert all(word in err for word in words), err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() and not (tmp_path / "tune").exists()


def test_out_that_is_a_file_is_a_one_line_error(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    assert tables_main(["ml-digits-skewed", "--algorithms", "fedavg", "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--out" in err and "is a file" in err
    assert target.read_text() == "keep me"


SWEEP = ["ml-digits-skewed", "--algorithms", "fedavg", "--seeds", "1", "--rounds", "3", "--nodes", "3",
         "-c", "local-epochs=1 checkpoint-every=1"]


@pytest.mark.slow
def test_ctrl_c_keeps_the_checkpoint_and_the_rerun_resumes_it(tmp_path, capsys, monkeypatch):
    """Ctrl-C in round 3: one line, exit 130; the same command then resumes from round 2 and the
    result equals an uninterrupted sweep's."""
    uninterrupted = tmp_path / "uninterrupted"
    assert tables_main(SWEEP + ["--out", str(uninterrupted)]) == 0
    end_round = RunRecorder.end_round

    def interrupt_in_round_3(self, server_round):
        if server_round == 3:
            raise KeyboardInterrupt
        return end_round(self, server_round)

    out = tmp_path / "out"
    monkeypatch.setattr(RunRecorder, "end_round", interrupt_in_round_3)
    capsys.readouterr()
    assert tables_main(SWEEP + ["--out", str(out)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("interrupted: 0 of 1 runs finished") and "checkpoint" in err[0]
    run_dir = out / "runs" / "ml-digits-skewed" / "fedavg" / "seed-0"
    assert (run_dir / "checkpoint.npz").is_file() and not (run_dir / "summary.json").exists()
    monkeypatch.undo()
    assert tables_main(SWEEP + ["--out", str(out)]) == 0
    assert "resumed from round 2" in capsys.readouterr().out
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2, 3]
    expected = json.loads((uninterrupted / "runs" / "ml-digits-skewed" / "fedavg" / "seed-0" / "summary.json").read_text())
    assert json.loads((run_dir / "summary.json").read_text())["final"] == expected["final"]


@pytest.mark.slow
def test_a_run_marked_failed_is_rerun_and_kept_out_of_the_table(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["ml-digits-skewed", "--algorithms", "fedavg", "--seeds", "2", "--rounds", "1", "--nodes", "3",
            "-c", "local-epochs=1", "--out", str(out)]
    assert tables_main(argv) == 0
    run_dir = out / "runs" / "ml-digits-skewed" / "fedavg" / "seed-1"
    summary = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").write_text(json.dumps({**summary, "status": "failed"}))
    assert tables_main(argv + ["--table-only"]) == 0
    assert "(n=1)" in (out / "table.md").read_text()  # the failed seed is not averaged in
    capsys.readouterr()
    assert tables_main(argv) == 0
    lines = capsys.readouterr().out
    assert "seed=0: done earlier, skipped" in lines and "restarted" in lines
    assert json.loads((run_dir / "summary.json").read_text()).get("status", "completed") == "completed"
    assert (run_dir.parent / "seed-1.unfinished-1" / "summary.json").is_file()  # set aside, not deleted
    assert "(n=1)" not in (out / "table.md").read_text()


@pytest.mark.slow
def test_more_rounds_continue_finished_runs_from_their_checkpoint(tmp_path, capsys):
    """--rounds raised from 1 to 2: the 1-round run is continued (its round 1 kept), not refused or redone."""
    argv = ["ml-digits-skewed", "--algorithms", "fedavg", "--seeds", "1", "--nodes", "3", "-c", "local-epochs=1",
            "--out", str(tmp_path)]
    assert tables_main(argv + ["--rounds", "1"]) == 0
    run_dir = tmp_path / "runs" / "ml-digits-skewed" / "fedavg" / "seed-0"
    first = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    capsys.readouterr()
    assert tables_main(argv + ["--rounds", "2"]) == 0
    assert "resumed from round 1" in capsys.readouterr().out
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2] and rows[0] == first
    assert "num-server-rounds: 2" in (run_dir / "config.yaml").read_text()
