"""Executing a sweep's runs: each into its run directory, with a progress bar and one line per
finished run (elapsed time, ETA); Ctrl-C stops with :class:`SweepInterrupted`.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Sequence, TextIO

import numpy as np
from tqdm import tqdm

from fedapp.inprocess import run_inprocess
from fedapp.simulate import main as simulate_main, to_override_string
from fedapp.tables.plan import (
    COMPLETED,
    SWEEP_MARKER,
    RunSpec,
    resumable_round,
    run_state,
    set_aside,
    summary_status,
)

MAIN_METRICS = {"multilabel": ("macro_auc", "macro_f1"), "singlelabel": ("accuracy", "pm")}


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep: carries how far it got (the run in progress keeps its checkpoint)."""

    def __init__(self, finished: int, total: int, current: RunSpec | None) -> None:
        super().__init__(f"{finished} of {total} runs finished")
        self.finished, self.total, self.current = finished, total, current


def execute(spec: RunSpec, nodes: int, engine: str, resume: bool = False) -> None:
    """Run one spec into its run directory (``resume``: continue its checkpoint); raises on failure."""
    overrides = {**spec.overrides, "resume": str(spec.run_dir)} if resume else spec.overrides
    if engine == "inprocess":
        run_inprocess(overrides, nodes)
    else:
        code = simulate_main(["--nodes", str(nodes), "-c", to_override_string(overrides)])
        if code == 130:
            raise KeyboardInterrupt
        if code != 0:
            raise RuntimeError(f"python -m fedapp.simulate exited with {code}; see {spec.run_dir}/simulation.log")
    status = summary_status(spec.run_dir)
    if status is None:
        raise RuntimeError(f"the run wrote no summary.json in {spec.run_dir}")
    if status != COMPLETED:
        raise RuntimeError(f"the run in {spec.run_dir} ended with status {status!r}")
    (spec.run_dir / SWEEP_MARKER).write_text(json.dumps({"nodes": nodes, "engine": engine}))


def run_sweep(specs: Sequence[RunSpec], nodes: int, engine: str, stream: TextIO | None = None,
              title: str = "tables") -> list[tuple[RunSpec, str]]:
    """Run what is not done yet, one line per finished run; returns the failures (spec, reason).

    Ctrl-C raises :class:`SweepInterrupted` (the run in progress keeps its last checkpoint and is
    continued by the next call with the same specs).
    """
    stream = stream or sys.stdout
    states = [run_state(spec, nodes) for spec in specs]
    todo = sum(state != "done" for state in states)
    print(f"[{title}] {len(specs)} runs ({len(specs) - todo} done earlier, {todo} to run), engine={engine}, "
          f"nodes={nodes}", file=stream, flush=True)
    started = time.monotonic()
    durations: list[float] = []
    failures: list[tuple[RunSpec, str]] = []
    width = len(str(len(specs)))
    # The bar goes to stderr on a terminal only; logs get the per-run lines (with their own ETA).
    bar = tqdm(total=todo, desc=title, unit="run", file=sys.stderr, disable=None, leave=False, dynamic_ncols=True)
    finished = len(specs) - todo
    current: RunSpec | None = None
    try:
        for index, (spec, state) in enumerate(zip(specs, states), start=1):
            prefix = f"[{index:>{width}}/{len(specs)}] {spec.label}:"
            if state == "done":
                bar.write(f"{prefix} done earlier, skipped", file=stream)
                continue
            current = spec
            begin = time.monotonic()
            note = ""
            try:
                resume = False
                if state == "partial":
                    from_round = resumable_round(spec)
                    if from_round is not None:
                        resume, note = True, f" (resumed from round {from_round})"
                    else:
                        note = f" (restarted; the unfinished run was moved to {set_aside(spec.run_dir).name})"
                execute(spec, nodes, engine, resume=resume)
                outcome = summary_line(json.loads((spec.run_dir / "summary.json").read_text()))
            except Exception as error:  # noqa: BLE001 - one failed run must not stop the sweep
                failures.append((spec, f"{type(error).__name__}: {error}"))
                outcome = f"FAILED ({type(error).__name__}: {error})"
            current = None
            finished += 1
            durations.append(time.monotonic() - begin)
            todo -= 1
            eta = _duration(todo * float(np.mean(durations))) if todo else "0s"
            bar.write(f"{prefix} {outcome}{note} ({durations[-1]:.0f} s) | elapsed "
                      f"{_duration(time.monotonic() - started)}, ETA {eta}", file=stream)
            stream.flush()
            bar.update(1)
    except KeyboardInterrupt:
        raise SweepInterrupted(finished, len(specs), current) from None
    finally:
        bar.close()
    return failures


def summary_line(summary: dict[str, Any]) -> str:
    """``final macro_auc=... macro_f1=...; best ... (round r)``; validation only for tuning runs."""
    names = MAIN_METRICS[summary["task"]]
    if not summary.get("final"):  # evaluate-test=false: no test metrics
        return f"{summary.get('rounds')} rounds (validation only)"
    final = " ".join(f"{n}={_num(summary['final'].get(n))}" for n in names)
    best = " ".join(f"{n}={_num(summary['best'].get(n))}" for n in names)
    return f"final {final}; best {best} (round {summary.get('best_round')})"


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "n/a"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")
