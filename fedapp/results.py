"""The run directory: what a run writes there, and the recorder that writes it round by round.

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

``summary.json``'s content and statuses, and reading a run directory back, are in
:mod:`fedapp.run_files` (its names can be imported from here too).
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from logging import INFO
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from flwr.common import log

from fedapp.atomic_io import atomic_write_bytes, jsonable
from fedapp.run_files import (  # noqa: F401  (re-exported: imported from fedapp.results elsewhere)
    MAIN_METRIC,
    STATUSES,
    RunDirError,
    failure_reason,
    last_client_metrics,
    load_run,
    mark_run,
    read_rows,
    run_status,
    summarize,
    test_metrics,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


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
        self.notes: dict[str, Any] = {}  # facts about the run that are not run-config keys, for summary.json
        self._pending: dict[int, dict[str, Any]] = {}
        self.metrics_path = self.run_dir / "metrics.jsonl"
        done = float(self.rows[-1].get("wall_seconds") or 0.0) if self.rows else 0.0
        self._started = time.time() - done  # wall_seconds continues across a resume
        if not create:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=True))
        lines = "".join(json.dumps(jsonable(row)) + "\n" for row in self.rows)
        if resume_rows is not None:
            atomic_write_bytes(self.metrics_path, lines.encode())
            (self.run_dir / "summary.json").unlink(missing_ok=True)
        else:
            self.metrics_path.write_text("")
        self.clients_path = self.run_dir / "clients.jsonl"
        if resume_rows is None:
            self.clients_path.write_text("")
        self.tensorboard = None
        if config.get("tensorboard", True):
            from fedapp.tblog import TensorBoardLog  # lazy, like the plots: ClientApp processes import this module

            self.tensorboard = TensorBoardLog(self.run_dir, config, task)

    def record_partition(self, counts: np.ndarray, class_names: tuple[str, ...], global_counts: np.ndarray) -> None:
        """Write ``partition.json`` and ``plots/partition.png`` for the clients' training counts."""
        from fedapp.plots import plot_partition  # lazy: matplotlib costs a ClientApp process a second

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
            handle.write(json.dumps(jsonable(line)) + "\n")

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
            handle.write(json.dumps(jsonable(row)) + "\n")
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
                   **self.notes, **summarize(self.rows, self.task)}
        (self.run_dir / "summary.json").write_text(json.dumps(jsonable(summary), indent=2))
        from fedapp.plots import plot_clients, plot_run  # lazy: matplotlib (see record_partition)
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
