"""Compare finished runs: ``python -m fedapp.report RUN_DIR... [--out report.png] [--html report.html]``.

Prints a markdown table (one row per run: algorithm, dataset, partition, seed, final and best
metrics, bytes and seconds per round), saves a plot of the main metric over rounds and writes an
HTML page with the table, that plot and every run's section. Runs whose ``summary.json`` says
``failed`` or ``interrupted``, or that have none (unfinished), are left out of the table and listed
on stderr; if no run is left, it is an error.

Every finished run also gets its own ``<run dir>/report.html`` (:func:`write_run_report`): the
config, the summary, every plot of ``plots/`` and the per-client table. The pages are
self-contained (plots inline as base64 PNG, CSS inline, no script, no external link), so they open
from disk without a server and can be mailed as one file.
"""

from __future__ import annotations

import argparse
import base64
import html
import sys
from pathlib import Path
from typing import Any, Sequence

from fedapp.plots import plot_comparison
from fedapp.run_files import RunDirError, load_run, run_status

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


# ------------------------------------------------------------------------------------------ HTML
STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; padding: 0 1.5em; max-width: 1200px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; } h3 { font-size: 1.05em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
th { background: #f0f0f0; } td.k, th.k { text-align: left; }
tr.changed td { background: #fff7d6; }
img { max-width: 100%; border: 1px solid #eee; margin: 4px; }
.plots { display: flex; flex-wrap: wrap; align-items: flex-start; }
.plots img { max-width: 48%; } .plots img.wide { max-width: 98%; }
.note { color: #666; font-size: 0.85em; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if value != value else f"{value:.4f}"
    return _e("n/a" if value is None else value)


def image_tag(path: Path, alt: str, wide: bool = False) -> str:
    """``<img>`` with the PNG inline as a base64 data URI (the page needs no other file)."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    extra = ' class="wide"' if wide else ""
    return f'<img{extra} alt="{_e(alt)}" title="{_e(alt)}" src="data:image/png;base64,{data}">'


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]], row_classes: Sequence[str] = ()) -> str:
    head = "".join(f'<th{" class=k" if i == 0 else ""}>{_e(h)}</th>' for i, h in enumerate(header))
    body = []
    for index, row in enumerate(rows):
        css = f' class="{row_classes[index]}"' if index < len(row_classes) and row_classes[index] else ""
        cells = "".join(f'<td{" class=k" if i == 0 else ""}>{_cell(v)}</td>' for i, v in enumerate(row))
        body.append(f"<tr{css}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def client_table(run: dict[str, Any]) -> str:
    """Per client: its training data (samples or positives, classes held) and its metrics."""
    partition, clients = run.get("partition"), run.get("clients")
    if not partition and not clients:
        return '<p class="note">No per-client results were recorded for this run.</p>'
    counts = partition["counts"] if partition else []
    per_client = clients["clients"] if clients else {}
    ids = sorted({str(k) for k in range(len(counts))} | set(per_client), key=int)
    metrics = sorted({m for values in per_client.values() for m in values})
    task = (run.get("summary") or {}).get("task", "singlelabel")
    amount = "train samples" if task == "singlelabel" else "train positives"
    header = ["client", amount, "classes held"] + metrics
    rows = []
    for cid in ids:
        row_counts = counts[int(cid)] if int(cid) < len(counts) else None
        rows.append([cid, sum(row_counts) if row_counts is not None else None,
                     sum(1 for c in row_counts if c > 0) if row_counts is not None else None]
                    + [per_client.get(cid, {}).get(m) for m in metrics])
    where = f" (round {clients['round']})" if clients else ""
    what = ("personalized model on the client's local test set" if task == "singlelabel"
            else "final global model on the global test set, over the classes the client holds")
    return f'<p class="note">Metrics{where}: {_e(what)}.</p>' + html_table(header, rows)


def summary_table(run: dict[str, Any]) -> str:
    summary = run["summary"]
    metrics = sorted(set(summary["final"]) | set(summary["best"]))
    rows = [[m, summary["final"].get(m), summary["best"].get(m)] for m in metrics]
    note = (f'<p class="note">rounds: {summary["rounds"]}; best = round {_e(summary["best_round"])} '
            f'(selected by {_e(summary["best_selected_by"])}); {summary["bytes_per_round"] / 1e6:.3f} MB and '
            f'{summary["mean_round_seconds"]:.2f} s per round; skipped rounds: {summary["rounds_skipped"]}; '
            f'failed / rejected client replies: {summary["clients_failed_total"]} / '
            f'{summary["clients_rejected_total"]}</p>')
    return html_table(["metric (test split)", "final", "best"], rows) + note


def config_table(config: dict[str, Any]) -> str:
    """Every key; those that differ from the defaults first and highlighted."""
    from fedapp.config import RunConfig  # lazy: the defaults come from every algorithm's declaration (torch)

    defaults = RunConfig.default_values()
    changed = sorted(k for k in config if k in defaults and config[k] != defaults[k])
    rest = sorted(k for k in config if k not in changed)
    keys = changed + rest
    return html_table(["key", "value"], [[k, config[k]] for k in keys],
                      ["changed" if k in changed else "" for k in keys]) + \
        '<p class="note">Highlighted: keys that differ from the defaults in pyproject.toml.</p>'


def run_section(run: dict[str, Any], heading: str = "h2") -> str:
    """One run: summary, plots (partition and per-client first), per-client table, config."""
    plots_dir = Path(run["dir"]) / "plots"
    first = [name for name in ("partition.png", "clients.png") if (plots_dir / name).is_file()]
    others = sorted(p.name for p in plots_dir.glob("*.png") if p.name not in first) if plots_dir.is_dir() else []
    images = "".join(image_tag(plots_dir / name, name[:-4], wide=name in first) for name in first + others)
    parts = [
        f"<{heading}>{_e(run_label(run['config']))}</{heading}>",
        f'<p class="note">{_e(run["dir"])}</p>',
        "<h3>Summary</h3>", summary_table(run),
        "<h3>Plots</h3>", f'<div class="plots">{images}</div>',
        "<h3>Per client</h3>", client_table(run),
        "<h3>Config</h3>", config_table(run["config"]),
    ]
    return "\n".join(parts)


def html_page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{STYLE}</style></head>\n<body>\n<h1>{_e(title)}</h1>\n{body}\n</body></html>\n")


def write_run_report(run_dir: str | Path) -> Path:
    """``<run dir>/report.html`` for one finished run."""
    run = load_run(run_dir)
    if run["summary"] is None:
        raise FileNotFoundError(f"{run['dir']}: no summary.json (the run did not finish)")
    path = Path(run["dir"]) / "report.html"
    path.write_text(html_page("Run report", run_section(run)))
    return path


def comparison_page(runs: Sequence[dict[str, Any]], plot: Path) -> str:
    """The comparison: the runs' table, the main metric over rounds, then each run's section."""
    task = runs[0]["summary"]["task"]
    metrics = COLUMNS[task]
    header = ["run", "rounds"] + [f"final {m}" for m in metrics] + [f"best {m}" for m in metrics]
    header += ["MB/round", "s/round"]
    rows = []
    for run in runs:
        summary = run["summary"]
        row: list[Any] = [run_label(run["config"]), summary["rounds"]]
        for which in ("final", "best"):
            row += [summary[which].get(m) for m in metrics]
        row += [summary["bytes_per_round"] / 1e6, summary["mean_round_seconds"]]
        rows.append(row)
    body = ["<h2>Comparison</h2>", html_table(header, rows), image_tag(plot, "comparison")]
    body += [run_section(run, "h2") for run in runs]
    return html_page(f"Comparison of {len(runs)} runs", "\n".join(body))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories (each with metrics.jsonl, summary.json)")
    parser.add_argument("--out", default="report.png", help="where to save the comparison plot")
    parser.add_argument("--html", default="report.html", help="where to write the comparison page")
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
    page = Path(args.html).expanduser().resolve()
    try:
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(comparison_page(runs, plot))
    except OSError as error:
        print(f"error: --html={args.html!r}: the page cannot be written ({error.strerror or error})", file=sys.stderr)
        return 2
    print(f"page: {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
