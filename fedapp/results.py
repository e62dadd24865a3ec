"""The run directory: what a run writes and how it is read back.

    <run dir>/config.yaml      the resolved run config (kebab-case keys) + num-partitions
    <run dir>/metrics.jsonl    one JSON object per round (written when the round ends)
    <run dir>/summary.json     "status", "final" and "best" metrics, rounds, bytes_per_round, ...
    <run dir>/plots/*.png      each test metric over rounds (validation dashed), training loss terms,
                               partition.png (clients x classes counts; global class counts),
                               clients.png (the per-client metric of the last round that has one)
    <run dir>/partition.json   class names, the (clients x classes) training counts, global counts
    <run dir>/clients.jsonl    one line per round with per-client metrics: single-label, each
                               client's personalized local-test accuracy (federated evaluation);
                               multi-label, the final global model's macro-F1/AUC over each
                               client's own classes on the global test set (last round)
    <run dir>/report.html      one self-contained page: config, summary, plots, per-client table
    <run dir>/events.out.tfevents.*  TensorBoard scalars and hparams (``tensorboard=true``)
    <run dir>/checkpoint.npz   the latest checkpoint (``checkpoint-every``; see fedapp.checkpoint)

A resumed run (``resume=<run dir>``) reopens the same directory: ``metrics.jsonl`` is rewritten with
the checkpoint's rows (so a round the crashed run wrote after its last checkpoint appears once, as
re-run) and appended to; ``config.yaml`` becomes the resuming run's config; a stale
``summary.json`` is removed until the run finishes again.

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
import os
import time
from datetime import datetime
from logging import INFO
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from flwr.common import log

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MAIN_METRIC = {"multilabel": "macro_auc", "singlelabel": "accuracy"}
STATUSES = ("completed", "failed", "interrupted")


class RunFailedError(RuntimeError):
    """The run finished its rounds without a trained model (see :func:`failure_reason`)."""


def resolve_run_dir(output_dir: str, algorithm: str, dataset: str) -> Path:
    """The absolute run directory; the default is ``outputs/<timestamp>-<algorithm>-<dataset>``.

    A relative ``output-dir`` is resolved against ``$FEDAPP_HOME`` if set, else the current
    directory (the SuperLink's, for a ServerApp: pass an absolute path to be sure).
    """
    if output_dir:
        path = Path(output_dir).expanduser()
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path = Path("outputs") / f"{stamp}-{algorithm}-{dataset}"
    if not path.is_absolute():
        path = Path(os.environ.get("FEDAPP_HOME", os.getcwd())) / path
    return path.resolve()


class RunRecorder:
    """Collects per-round values, appends ``metrics.jsonl`` lines and writes the summary and plots."""

    def __init__(
        self, run_dir: Path, config: dict[str, Any], task: str, num_rounds: int,
        resume_rows: list[dict[str, Any]] | None = None, create: bool = True,
    ) -> None:
        """Open ``run_dir`` for a new run, or, with ``resume_rows`` (a checkpoint's rows), continue it.

        ``create=False`` writes nothing (a recorder for checks made before a run starts).
        """
        self.run_dir = Path(run_dir)
        self.run_config = dict(config)
        self.task = task
        self.num_rounds = num_rounds
        self.main_metric = MAIN_METRIC[task]
        self.rows: list[dict[str, Any]] = [dict(r) for r in resume_rows or []]
        self._pending: dict[int, dict[str, Any]] = {}
        self.metrics_path = self.run_dir / "metrics.jsonl"
        done = float(self.rows[-1].get("wall_seconds") or 0.0) if self.rows else 0.0
        self._started = time.time() - done  # wall_seconds continues across a resume
        if not create:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=True))
        lines = "".join(json.dumps(_jsonable(row)) + "\n" for row in self.rows)
        if resume_rows is not None:
            from fedapp.checkpoint import atomic_write_bytes

            atomic_write_bytes(self.metrics_path, lines.encode())
            (self.run_dir / "summary.json").unlink(missing_ok=True)
        else:
            self.metrics_path.write_text("")
        self.clients_path = self.run_dir / "clients.jsonl"
        if resume_rows is None:
            self.clients_path.write_text("")
        # wall_seconds continues across a resume: time of the rows already recorded.
        done = float(self.rows[-1].get("wall_seconds") or 0.0) if self.rows else 0.0
        self._started = time.time() - done
        self.tensorboard = None
        if config.get("tensorboard", True):
            from fedapp.tblog import TensorBoardLog

            self.tensorboard = TensorBoardLog(self.run_dir, config, task)

    def record_partition(self, counts: np.ndarray, class_names: tuple[str, ...], global_counts: np.ndarray) -> None:
        """Write ``partition.json`` and ``plots/partition.png`` for the clients' training counts."""
        from fedapp.plots import plot_partition

        (self.run_dir / "partition.json").write_text(json.dumps({
            "class_names": list(class_names), "counts": np.asarray(counts).tolist(),
            "global_counts": np.asarray(global_counts).tolist(),
        }))
        plot_partition(np.asarray(counts), class_names, np.asarray(global_counts), self.task,
                       self.run_dir / "plots" / "partition.png")

    def add_client_metrics(self, server_round: int, per_client: dict[int, dict[str, float]]) -> None:
        """Append one ``clients.jsonl`` line: ``{"round": r, "clients": {"<partition>": {metric: value}}}``."""
        if not per_client:
            return
        line = {"round": server_round, "clients": {str(k): per_client[k] for k in sorted(per_client)}}
        with self.clients_path.open("a") as handle:
            handle.write(json.dumps(_jsonable(line)) + "\n")

    def start_round(self, server_round: int) -> None:
        self._pending[server_round] = {"round": server_round}

    def add(self, server_round: int, **values: Any) -> None:
        self._pending.setdefault(server_round, {"round": server_round}).update(values)

    def increment(self, server_round: int, **values: float) -> None:
        """Add ``values`` to the round's counters (e.g. failures summed over retried attempts)."""
        row = self._pending.setdefault(server_round, {"round": server_round})
        for name, value in values.items():
            row[name] = row.get(name, 0) + value

    def is_open(self, server_round: int) -> bool:
        """True while the round has values not yet written to ``metrics.jsonl``."""
        return server_round in self._pending

    def end_round(self, server_round: int) -> dict[str, Any]:
        """Append the round's line to ``metrics.jsonl`` and log one progress line."""
        row = self._pending.pop(server_round, {"round": server_round})
        row["wall_seconds"] = time.time() - self._started
        self.rows.append(row)
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps(_jsonable(row)) + "\n")
        if self.tensorboard is not None:
            self.tensorboard.log_round(row)
        log(INFO, "%s", progress_line(row, self.num_rounds, self.task))
        return row

    def finish(self) -> dict[str, Any]:
        """Write ``summary.json``, the plots and ``report.html``; returns the summary.

        Raises :class:`RunFailedError` after writing them if the rounds trained nothing usable
        (:func:`failure_reason`): the summary then says ``"status": "failed"``.
        """
        reason = failure_reason(self.rows)
        summary = {"status": "failed" if reason else "completed", **({"reason": reason} if reason else {}),
                   **summarize(self.rows, self.task)}
        (self.run_dir / "summary.json").write_text(json.dumps(_jsonable(summary), indent=2))
        from fedapp.plots import plot_clients, plot_run
        from fedapp.report import write_run_report

        plot_run(self.rows, self.run_dir / "plots", self.task)
        clients = last_client_metrics(self.run_dir)
        if clients:
            plot_clients(clients, self.task, self.run_dir / "plots" / "clients.png")
        write_run_report(self.run_dir)
        if self.tensorboard is not None:
            self.tensorboard.close()
        if reason:
            raise RunFailedError(f"{reason}; the run directory {self.run_dir} is marked failed")
        log(INFO, "results: %s", self.run_dir)
        return summary


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
        path.write_text(json.dumps(_jsonable({**existing, "status": status, "reason": reason}), indent=2))
        return
    try:
        rows = read_rows(Path(run_dir) / "metrics.jsonl")
    except (OSError, ValueError):
        rows = []
    summary: dict[str, Any] = {"status": status, "reason": reason}
    if task in MAIN_METRIC:
        summary.update(summarize(rows, task))
    path.write_text(json.dumps(_jsonable(summary), indent=2))


def progress_line(row: dict[str, Any], num_rounds: int, task: str) -> str:
    """``[round 3/20] macro_auc=0.912 macro_f1=0.501 loss=0.231 (1.8 s, ETA 0:00:31)``: what simulate shows.

    The ETA is the rounds left times the mean wall time per round so far (setup included).
    """
    names = ("macro_auc", "macro_f1") if task == "multilabel" else ("accuracy", "pm")
    parts = [f"[round {row['round']}/{num_rounds}]"]
    for name in names:
        if f"test_{name}" in row:
            parts.append(f"{name}={row[f'test_{name}']:.4f}")
    if "train_loss" in row:
        parts.append(f"loss={row['train_loss']:.4f}")
    if row.get("clients_rejected") or row.get("clients_failed"):
        parts.append(f"rejected={row.get('clients_rejected', 0)} failed={row.get('clients_failed', 0)}")
    if row.get("round_skipped"):
        parts.append("SKIPPED (too few valid updates)")
    if "round_seconds" in row:
        eta = ""
        if row.get("wall_seconds") and row["round"] > 0:
            left = max(num_rounds - row["round"], 0) * row["wall_seconds"] / row["round"]
            eta = f", ETA {format_seconds(left)}"
        parts.append(f"({row['round_seconds']:.1f} s{eta})")
    return " ".join(parts)


def format_seconds(seconds: float) -> str:
    """``h:mm:ss`` of a duration."""
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


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


def _jsonable(value: Any) -> Any:
    """NaN/inf become null so that the files are strict JSON."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return _jsonable(value.item())
    return value
