"""Compare finished runs: ``python -m fedapp.report RUN_DIR... [--out report.png]``.

Prints a markdown table (one row per run: algorithm, dataset, partition, seed, final and best
metrics, bytes and seconds per round) and saves a plot of the main metric over rounds. Runs whose
``summary.json`` says ``failed`` or ``interrupted``, or that have none (unfinished), are left out
of the table and listed on stderr; if no run is left, it is an error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from fedapp.plots import plot_comparison
from fedapp.results import RunDirError, load_run, run_status

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
    out = Path(args.out).expanduser().resolve()
    if out.is_dir() or (out.parent.exists() and not out.parent.is_dir()):
        print(f"error: --out={args.out!r} is not allowed; allowed: a file path for the plot (e.g. report.png)",
              file=sys.stderr)
        return 2
    try:
        runs = [load_run(path) for path in args.runs]
    except RunDirError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    skipped = [r for r in runs if run_status(r["summary"]) != "completed"]
    for run in skipped:
        status = run_status(run["summary"])
        reason = (run["summary"] or {}).get("reason") or "no summary.json: the run did not finish"
        print(f"skipped {run['dir']}: {status} ({reason})", file=sys.stderr)
    runs = [r for r in runs if r not in skipped]
    if not runs:
        print("error: no completed run to report (see the skipped runs above)", file=sys.stderr)
        return 2
    broken = [str(r["dir"]) for r in runs if r["summary"].get("task") not in COLUMNS]
    if broken:
        print(f"error: summary.json without a known task in: {', '.join(broken)}", file=sys.stderr)
        return 2
    tasks = {r["summary"]["task"] for r in runs}
    if len(tasks) > 1:
        print(f"error: cannot compare multi-label and single-label runs in one table ({tasks})", file=sys.stderr)
        return 2
    print(markdown_table(runs))
    try:
        plot = plot_comparison(runs, [run_label(r["config"]) for r in runs], runs[0]["summary"]["main_metric"], out)
    except (OSError, ValueError) as error:  # ValueError: matplotlib knows no such image format
        print(f"error: --out={args.out!r}: the plot cannot be written ({getattr(error, 'strerror', None) or error})",
              file=sys.stderr)
        return 2
    print(f"\nplot: {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
