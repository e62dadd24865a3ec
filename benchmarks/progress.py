"""Progress over a sweep of runs: a tqdm bar with ETA (on a terminal) and one line per finished run.

The line (``[3/12] <what finished> | elapsed 0:04:10, ETA 0:12:30``) goes to stderr whether or not
stderr is a terminal, so a sweep logged to a file still says how far it is; the bar itself is
drawn on terminals only. The ETA is the runs left times the mean wall time of the runs executed so
far (runs found finished earlier count as done but not towards the mean).
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

from fedapp.results import format_seconds


class RunProgress:
    """``finished(line)`` after each run; ``close()`` at the end (or use it as a context manager)."""

    def __init__(self, total: int, desc: str) -> None:
        self.total = total
        self.done = 0
        self.executed = 0
        self.started = time.monotonic()
        self.bar = tqdm(total=total, desc=desc, unit="run", file=sys.stderr, disable=None, dynamic_ncols=True)

    def eta_seconds(self, elapsed: float) -> float | None:
        """Seconds left at the mean time per executed run, None before the first one."""
        if self.executed == 0:
            return None
        return elapsed / self.executed * (self.total - self.done)

    def finished(self, line: str, executed: bool = True) -> str:
        """Count one run (``executed=False``: found finished earlier) and print its line; returns it."""
        self.done += 1
        self.executed += int(executed)
        elapsed = time.monotonic() - self.started
        eta = self.eta_seconds(elapsed)
        text = (f"[{self.done}/{self.total}] {line} | elapsed {format_seconds(elapsed)}"
                f", ETA {format_seconds(eta) if eta is not None else '?'}")
        self.bar.update(1)
        tqdm.write(text, file=sys.stderr)
        return text

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> "RunProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
