"""The benchmarks (``python -m benchmarks.<name>``), and what their JSON reports share."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any


def machine_info(**extra: Any) -> dict[str, Any]:
    """A report's ``machine`` block: CPU count, platform and Python version, then ``extra``."""
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(), **extra}


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, as a list (what JSON writes back)."""
    return list(os.getloadavg())


def write_report(report: dict[str, Any], out: str | Path, indent: int = 2) -> None:
    """Write ``report`` as indented JSON to ``out`` (creating its folder) and print it as one line."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=indent) + "\n")
    print(json.dumps(report), flush=True)
