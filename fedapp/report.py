"""Compare finished runs: ``python -m fedapp.report RUN_DIR... [--out report.png]``.

Prints a markdown table (one row per run: algorithm, dataset, partition, seed, final and best
metrics, bytes and seconds per round) and saves a plot of the main metric over rounds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from fedapp.plots import plot_comparison
from fedapp.results import load_run

COLUMNS = {
    "multilabel": ("macro_auc", "macro_f1", "micro_auc", "micro_f1"),
    "singlelabel": ("gm", "pm", "many", "medium", "few"),
}


def run_label(config: dict[str, Any]) -> str:
    partition = "iid" if config.get("partition") == "iid" else f"alpha={config.get('alpha')}"
    if config.get("dataset", "").startswith("ml-") or config.get("class-presence-ratio", 1.0) != 1.0:
        partition += f" rho={config.get('class-presence-ratio')}"
    return f"{config.get('algorithm')} {config.get('dataset')} {partition} seed={config.get('seed')}"


def markdown_table(runs: Sequence[dict[str, Any]]) -> str:
    """One markdown row per run with its final and best (validation-selected) metrics."""
    task = runs[0]["summary"]["task"]
    metrics = COLUMNS[task]
    header = ["run", "rounds"] + [f"final {m}" for m in metrics] + [f"best {m}" for m in metrics]
    header += ["MB/round", "s/round"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in runs:
        summary = run["summary"]
        cells = [run_label(run["config"]), str(summary["rounds"])]
        for which in ("final", "best"):
            cells += [_fmt(summary[which].get(m)) for m in metrics]
        cells += [f"{summary['bytes_per_round'] / 1e6:.3f}", f"{summary['mean_round_seconds']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories (each with metrics.jsonl, summary.json)")
    parser.add_argument("--out", default="report.png", help="where to save the comparison plot")
    args = parser.parse_args(argv)
    runs = [load_run(path) for path in args.runs]
    unfinished = [str(r["dir"]) for r in runs if r["summary"] is None]
    if unfinished:
        print(f"error: no summary.json (run did not finish) in: {', '.join(unfinished)}", file=sys.stderr)
        return 2
    tasks = {r["summary"]["task"] for r in runs}
    if len(tasks) > 1:
        print(f"error: cannot compare multi-label and single-label runs in one table ({tasks})", file=sys.stderr)
        return 2
    print(markdown_table(runs))
    plot = plot_comparison(runs, [run_label(r["config"]) for r in runs], runs[0]["summary"]["main_metric"],
                           Path(args.out).resolve())
    print(f"\nplot: {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
