"""The table runner: a tiny real sweep (in-process engine), resume, and the tables against summary.json."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from fedapp.tables import main as tables_main, plan_sweep

SWEEP = ["ml-digits-skewed", "--algorithms", "fedavg,fedprox", "--seeds", "2", "--rounds", "1", "--nodes", "3",
         "-c", "local-epochs=1"]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    code = tables_main(SWEEP + ["--out", str(out)])
    assert code == 0
    return out


def summaries(out: Path, algorithm: str) -> list[dict]:
    return [json.loads((out / "runs" / "ml-digits-skewed" / algorithm / f"seed-{s}" / "summary.json").read_text())
            for s in (0, 1)]


def test_sweep_writes_one_run_directory_per_algorithm_and_seed(sweep):
    for algorithm in ("fedavg", "fedprox"):
        for seed in (0, 1):
            run_dir = sweep / "runs" / "ml-digits-skewed" / algorithm / f"seed-{seed}"
            assert (run_dir / "summary.json").is_file() and (run_dir / "metrics.jsonl").is_file()
            text = (run_dir / "config.yaml").read_text()
            assert f"algorithm: {algorithm}" in text and f"seed: {seed}" in text
            assert "class-presence-ratio: 0.5" in text and "num-server-rounds: 1" in text


def test_csv_mean_and_std_match_the_run_summaries(sweep):
    rows = read_csv(sweep / "table.csv")
    assert len(rows) == 2 * 2 * 4  # selections x algorithms x multi-label metrics
    assert {r["metric"] for r in rows} == {"macro_auc", "macro_f1", "micro_auc", "micro_f1"}
    for row in rows:
        values = [s[row["selection"]][row["metric"]] for s in summaries(sweep, row["algorithm"])]
        assert int(row["n"]) == 2 and row["seeds"] == "0;1"
        assert float(row["mean"]) == pytest.approx(np.mean(values))
        assert float(row["std"]) == pytest.approx(np.std(values, ddof=1))


def test_markdown_has_paper_layout_in_percent(sweep):
    text = (sweep / "table.md").read_text()
    assert "### Final" in text and "### Best" in text and "validation" in text
    header = next(line for line in text.splitlines() if line.startswith("| Method"))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "Method", "ml-digits-skewed: macro-AUC (%)", "ml-digits-skewed: macro-F1 (%)",
        "ml-digits-skewed: micro-AUC (%)", "ml-digits-skewed: micro-F1 (%)"]
    best_section = text[text.index("### Best"):]
    fedprox_row = next(line for line in best_section.splitlines() if line.startswith("| FedProx"))
    values = [s["best"]["macro_auc"] * 100 for s in summaries(sweep, "fedprox")]
    expected = f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"
    assert fedprox_row.split("|")[2].strip() == expected
    assert (sweep / "table_best.png").stat().st_size > 5000 and (sweep / "table_final.png").is_file()


def test_resume_skips_finished_runs_and_reruns_unfinished_ones(sweep, capsys):
    done = sweep / "runs" / "ml-digits-skewed" / "fedavg" / "seed-0" / "metrics.jsonl"
    before = done.stat().st_mtime_ns
    unfinished = sweep / "runs" / "ml-digits-skewed" / "fedprox" / "seed-1"
    (unfinished / "summary.json").unlink()  # as if that run had been interrupted
    capsys.readouterr()
    assert tables_main(SWEEP + ["--out", str(sweep)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert sum("skipped" in line for line in lines) == 3
    rerun = next(line for line in lines if "fedprox seed=1" in line)
    assert "ETA" in rerun and "final macro_auc=" in rerun
    assert done.stat().st_mtime_ns == before
    assert (unfinished / "summary.json").is_file()


def test_runs_made_before_a_new_key_existed_still_count(sweep, capsys):
    config = sweep / "runs" / "ml-digits-skewed" / "fedavg" / "seed-0" / "config.yaml"
    text = config.read_text()
    config.write_text("\n".join(line for line in text.splitlines() if not line.startswith("max-update-norm:")) + "\n")
    try:
        assert tables_main(SWEEP + ["--out", str(sweep), "--algorithms", "fedavg"]) == 0
        assert "fedavg seed=0: done earlier, skipped" in capsys.readouterr().out
    finally:
        config.write_text(text)


@pytest.mark.parametrize("algorithm, kept", [("fedavg", True), ("fedprox", False)])
def test_a_changed_key_that_only_other_algorithms_read_keeps_the_run(sweep, capsys, algorithm, kept):
    config = sweep / "runs" / "ml-digits-skewed" / algorithm / "seed-0" / "config.yaml"
    text = config.read_text()
    config.write_text(text.replace("mu: 0.01", "mu: 0.5"))  # FedProx's key, as if its default had changed
    try:
        code = tables_main(SWEEP + ["--out", str(sweep), "--algorithms", algorithm, "--seeds", "1"])
        captured = capsys.readouterr()
        if kept:
            assert code == 0 and "fedavg seed=0: done earlier, skipped" in captured.out
        else:
            assert code == 2 and "mu: 0.5 there" in captured.err
    finally:
        config.write_text(text)


def test_finished_run_with_other_config_is_an_error(sweep, capsys):
    code = tables_main(["ml-digits-skewed", "--algorithms", "fedavg", "--seeds", "1", "--rounds", "1",
                        "--nodes", "3", "-c", "local-epochs=2", "--out", str(sweep)])
    assert code == 2 and "local-epochs" in capsys.readouterr().err


@pytest.mark.parametrize("argv, words", [
    (["ml-digits-skewed", "--algorithms", "fedavg", "-c", "seed=3"], ["seed", "runner"]),
    (["ml-digits-skewed", "--algorithms", "fedavg", "-c", "class-presence-ratio=1.0"],
     ["class-presence-ratio", "preset"]),
    (["no-such-preset", "--algorithms", "fedavg"], ["no-such-preset", "available"]),
    (["ml-digits-skewed", "--algorithms", "fedmagic"], ["fedmagic"]),
])
def test_bad_sweeps_fail_before_running(tmp_path, capsys, argv, words):
    assert tables_main(argv + ["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert all(word in err for word in words), err
    assert not (tmp_path / "runs").exists()


def test_single_label_settings_use_the_fedloge_layout(tmp_path):
    """GM, PM, Many, Med, Few as fractions; tabulated from (here hand-written) summaries."""
    specs = plan_sweep(["default"], ["fedavg", "fedprox", "fedper"], 2, tmp_path, {"dataset": "lt-digits"})
    for spec in specs:
        spec.run_dir.mkdir(parents=True)
        value = 0.5 + 0.1 * spec.seed + (0.2 if spec.algorithm == "fedprox" else 0.0)
        metrics = {"accuracy": value, "gm": value, "pm": value, "many": value, "medium": value, "few": value}
        (spec.run_dir / "summary.json").write_text(json.dumps(
            {"task": "singlelabel", "final": metrics, "best": metrics, "best_round": 1}))
    code = tables_main(["default", "--algorithms", "fedavg,fedprox,fedper", "--seeds", "2", "-c", 'dataset="lt-digits"',
                        "--out", str(tmp_path), "--table-only"])
    assert code == 0
    text = (tmp_path / "table.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| Method"))
    assert [c.strip() for c in header.strip("|").split("|")][1:] == [
        "default: GM", "default: PM", "default: Many", "default: Med", "default: Few"]
    fedprox = next(line for line in text.splitlines() if line.startswith("| FedProx"))
    assert fedprox.split("|")[2].strip() == f"0.7500 ± {np.std([0.7, 0.8], ddof=1):.4f}"
    # FedPer has no global model: GM, Many, Med, Few print "–"; PM is its personalized models' number.
    fedper_line = next(line for line in text.splitlines() if line.startswith("| FedPer"))
    fedper = [cell.strip() for cell in fedper_line.split("|")]
    assert fedper[2] == "–" and fedper[4:7] == ["–", "–", "–"]
    assert fedper[3] == f"0.5500 ± {np.std([0.5, 0.6], ddof=1):.4f}"
