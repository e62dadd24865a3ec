"""Interleaved CPU timing of small closures (training steps, client rounds) for the step benchmarks."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def time_rows(
    steps: dict[str, Callable[[], None]], count: int, passes: int = 2, statistic: str = "mean", warmup: int = 20
) -> dict[str, float]:
    """Milliseconds of CPU time per call of each closure.

    Every pass runs each closure ``count`` times, the closures interleaved so that a change of the
    machine's load hits all of them; the result is the ``statistic`` ("mean" or "median") over the
    passes. On a shared machine, many short passes and the median resist load bursts best.
    """
    if statistic not in ("mean", "median"):
        raise ValueError(f"statistic={statistic!r} is not allowed; allowed: mean, median")
    for step in steps.values():
        for _ in range(warmup):
            step()
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(passes):
        for name, step in steps.items():
            started = time.process_time()
            for _ in range(count):
                step()
            samples[name].append((time.process_time() - started) / count * 1000.0)
    reduce = statistics.median if statistic == "median" else statistics.fmean
    return {name: reduce(values) for name, values in samples.items()}
