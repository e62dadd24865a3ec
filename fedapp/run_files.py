"""The run directory read back: ``summary.json`` (status, final and best metrics), ``metrics.jsonl``.

``summary.json`` says how the run ended in ``status``: ``"completed"`` (every round ran and at
least one round aggregated an update), ``"failed"`` (with ``reason``: no round aggregated any
update, every client of the last round failed or was rejected, or the command failed) or
``"interrupted"`` (Ctrl-C / SIGTERM). A failed or interrupted run's summary covers the rounds
recorded so far; :mod:`fedapp.report` skips such runs. A directory without ``summary.json`` is a
run that is still going or was killed outright (SIGKILL, power loss). ``summary.json`` files of
older versions have no ``status``: they were written by completed runs.

Metric names in ``summary.json`` drop the ``test_`` prefix: multi-label ``macro_auc``, ``micro_auc``,
``macro_f1``, ``micro_f1``; single-label ``accuracy``, ``gm`` (= accuracy of the global model on the
balanced global test set), ``pm`` (mean personalized local-test accuracy), ``many``, ``medium``,
``few``. ``best`` is taken at the round with the best *validation* score of the main metric
(``macro_auc`` or ``accuracy``), never selected on the test set.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from fedapp.atomic_io import jsonable

MAIN_METRIC = {"multilabel": "macro_auc", "singlelabel": "accuracy"}
STATUSES = ("completed", "failed", "interrupted")


def failure_reason(rows: list[dict[str, Any]]) -> str | None:
    """Why finished rounds do not make a result, or None: no round aggregated an update, or every
    client sampled in the last round failed or sent an update that was rejected."""
    if not rows:
        return "no round was recorded"
    if all(row.get("round_skipped") for row in rows):
        return (f"no round aggregated any update ({sum(int(r.get('clients_failed') or 0) for r in rows)} client "
                f"failures, {sum(int(r.get('clients_rejected') or 0) for r in rows)} rejected updates)")
    last = rows[-1]
    if last.get("clients_selected") and not last.get("clients_ok"):
        return (f"every client of the last round (round {last.get('round')}) failed or was rejected "
                f"({last.get('clients_failed', 0)} failed, {last.get('clients_rejected', 0)} rejected)")
    return None


def mark_run(run_dir: Path, status: str, reason: str, task: str | None = None) -> None:
    """Say in ``summary.json`` that the run in ``run_dir`` ended ``status`` (failed / interrupted).

    The summary covers the rounds in ``metrics.jsonl``. An existing verdict is kept when it is
    already a failure (it has the more specific reason) or when a completed run is "interrupted"
    afterwards; a completed summary that a later check found wrong becomes "failed".
    """
    path = Path(run_dir) / "summary.json"
    try:
        existing = json.loads(path.read_text())
    except (OSError, ValueError):
        existing = None
    if isinstance(existing, dict):
        previous = existing.get("status", "completed")
        if previous != "completed" or status == "interrupted":
            return
        path.write_text(json.dumps(jsonable({**existing, "status": status, "reason": reason}), indent=2))
        return
    try:
        rows = read_rows(Path(run_dir) / "metrics.jsonl")
    except (OSError, ValueError):
        rows = []
    summary: dict[str, Any] = {"status": status, "reason": reason}
    if task in MAIN_METRIC:
        summary.update(summarize(rows, task))
    path.write_text(json.dumps(jsonable(summary), indent=2))


def test_metrics(row: dict[str, Any], task: str) -> dict[str, float]:
    """The ``test_*`` values of one round without the prefix, with ``gm`` for single-label runs."""
    metrics = {k[len("test_"):]: v for k, v in row.items() if k.startswith("test_")}
    if task == "singlelabel" and "accuracy" in metrics:
        metrics["gm"] = metrics["accuracy"]
    return metrics


def summarize(rows: list[dict[str, Any]], task: str) -> dict[str, Any]:
    """The ``summary.json`` content for the recorded rounds."""
    main = MAIN_METRIC[task]
    evaluated = [r for r in rows if f"test_{main}" in r]
    final = test_metrics(evaluated[-1], task) if evaluated else {}
    selector = f"val_{main}" if any(f"val_{main}" in r for r in evaluated) else None
    if selector:
        # Ties on the main metric (e.g. validation macro-AUC at 1.0) go to the better validation F1.
        tie_break = "val_macro_f1" if task == "multilabel" else selector
        best_row = max(evaluated, key=lambda r: (_finite_or(r.get(selector), -math.inf),
                                                 _finite_or(r.get(tie_break), -math.inf)))
    else:
        best_row = evaluated[-1] if evaluated else {}
    traffic = [r.get("bytes_sent", 0) + r.get("bytes_received", 0) for r in rows]
    seconds = [r["round_seconds"] for r in rows if "round_seconds" in r]
    return {
        "task": task,
        "main_metric": main,
        "rounds": len(rows),
        "final": final,
        "best": test_metrics(best_row, task) if best_row else {},
        "best_round": best_row.get("round") if best_row else None,
        "best_selected_by": selector or "last round (no validation split)",
        "bytes_per_round": sum(traffic) / len(traffic) if traffic else 0,
        "mean_round_seconds": sum(seconds) / len(seconds) if seconds else float("nan"),
        "rounds_skipped": sum(1 for r in rows if r.get("round_skipped")),
        "clients_failed_total": sum(int(r.get("clients_failed") or 0) for r in rows),
        "clients_rejected_total": sum(int(r.get("clients_rejected") or 0) for r in rows),
    }


def last_client_metrics(run_dir: str | Path) -> dict[str, Any] | None:
    """The last ``clients.jsonl`` line (``{"round", "clients"}``), or None if there is none."""
    path = Path(run_dir) / "clients.jsonl"
    if not path.is_file():
        return None
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else None


class RunDirError(ValueError):
    """A path is not a readable run directory; the message names the file and what is wrong."""


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl``. A torn *last* line (the process died while appending it) is
    left out; a bad line before it is an error naming the file and the line."""
    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
        except ValueError:
            if number == len(lines):
                break  # torn by a crash mid-write: that round is not recorded
            raise RunDirError(f"{path}: line {number} is not JSON; the file is damaged") from None
        if not isinstance(row, dict):
            raise RunDirError(f"{path}: line {number} is not a JSON object; the file is damaged")
        rows.append(row)
    return rows


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """A run directory read back: ``config``, ``rows`` (metrics.jsonl) and ``summary`` (None if absent).

    Raises :class:`RunDirError` naming the path if it is not a run directory or a file is unreadable.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirError(f"{path} is not a run directory ({'a file' if path.exists() else 'it does not exist'})")
    missing = [name for name in ("config.yaml", "metrics.jsonl") if not (path / name).is_file()]
    if missing:
        raise RunDirError(f"{path} is not a run directory: missing {', '.join(missing)}")
    try:
        config = yaml.safe_load((path / "config.yaml").read_text())
    except yaml.YAMLError as error:
        raise RunDirError(f"{path / 'config.yaml'} is not valid YAML ({' '.join(str(error).split())})") from None
    if not isinstance(config, dict):
        raise RunDirError(f"{path / 'config.yaml'} is not a mapping of run-config keys")
    summary_path = path / "summary.json"
    summary = None
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text())
        except ValueError as error:
            raise RunDirError(f"{summary_path} is not valid JSON ({error})") from None
        if not isinstance(summary, dict):
            raise RunDirError(f"{summary_path} is not a JSON object")
    partition_path = path / "partition.json"
    return {
        "partition": json.loads(partition_path.read_text()) if partition_path.is_file() else None,
        "clients": last_client_metrics(path),
        "dir": path.resolve(),
        "config": config,
        "rows": read_rows(path / "metrics.jsonl"),
        "summary": summary,
    }


def run_status(summary: dict[str, Any] | None) -> str:
    """``completed`` / ``failed`` / ``interrupted`` from a summary; ``unfinished`` without one."""
    if summary is None:
        return "unfinished"
    return str(summary.get("status", "completed"))  # summaries of older versions: completed runs


def _finite_or(value: Any, fallback: float) -> float:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else fallback
