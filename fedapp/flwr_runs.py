"""What the simulation and the deployment commands share to run Flower and judge the run.

The environment of Flower's processes, free loopback ports, ``flwr run --stream`` followed into a
log (with the run id it announces), the run's status in ``flwr ls --format json``, the results the
ServerApp must leave behind, and the exit codes and last lines of both commands: 0 and
``results: <run dir>``, 1 for a failed run, 2 for a refused input, 130 for Ctrl-C/SIGTERM.

``flwr run --stream`` exits 0 even when the ServerApp crashed, so a run counts as done only when
``flwr ls`` says ``finished:completed`` and :func:`check_results` accepts its run directory.
"""

from __future__ import annotations

import json
import math
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Mapping, Sequence

from fedapp.config import ConfigError
from fedapp.processes import signal_guard
from fedapp.results import PROJECT_ROOT, RunFailedError, read_rows

RUN_STATUS_DONE = "finished:completed"
LS_ATTEMPTS = 3  # a SuperLink busy with many SuperNodes may miss one CLI deadline
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# "Successfully started run 123" (flwr 1.41 may append " in federation <name>", which can hold digits)
_RUN_ID = re.compile(r"\brun\s+(\d+)")


class RunError(RuntimeError):
    """A Flower process or CLI call failed, or a run did not complete or left bad results."""


class RunInterrupted(Exception):
    """Ctrl-C or SIGTERM: what was started is stopped; the message says what and where the run is."""


# ------------------------------------------------------------------------------------ processes
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def flower_env(flwr_home: Path, project: Path = PROJECT_ROOT, drop: Sequence[str] = (),
               **extra: str) -> dict[str, str]:
    """This process's environment for a Flower process: its ``FLWR_HOME``, no telemetry or update
    check, this interpreter's scripts first on ``PATH``; ``drop`` removed, ``extra`` added."""
    env = {key: value for key, value in os.environ.items() if key not in drop}
    env.update(
        FLWR_HOME=str(flwr_home),
        # Relative output-dir values of the ServerApp resolve against this (fedapp.results).
        FEDAPP_HOME=str(project),
        FLWR_DISABLE_UPDATE_CHECK="1",
        FLWR_TELEMETRY_ENABLED="0",
        **extra,
    )
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def flwr_cli(args: Sequence[str], env: Mapping[str, str], timeout: float,
             cwd: Path | None = None) -> subprocess.CompletedProcess:
    """One bounded ``flwr`` CLI call; a call that outlives ``timeout`` is a :class:`RunError`."""
    try:
        return subprocess.run(["flwr", *args], env=dict(env), capture_output=True, text=True, timeout=timeout,
                              cwd=cwd)
    except subprocess.TimeoutExpired as error:
        raise RunError(f"`flwr {' '.join(args)}` did not return within {timeout:.0f} s") from error


# --------------------------------------------------------------------------------- CLI answers
def strip_ansi(text: str) -> str:
    """``text`` without terminal colour codes."""
    return _ANSI.sub("", text)


def parse_run_id(line: str) -> int | None:
    """The run id in ``flwr run``'s "Successfully started run <id>" line, or None."""
    match = _RUN_ID.search(strip_ansi(line))
    return int(match.group(1)) if match else None


def json_of(text: str) -> dict[str, Any]:
    """The JSON object in a CLI's output (the CLI may print notices before it); {} if none."""
    start = text.find("{")
    if start < 0:
        return {}
    try:
        answer = json.loads(text[start:])
    except json.JSONDecodeError:
        return {}
    return answer if isinstance(answer, dict) else {}


def listed_status(answer: Mapping[str, Any], run_id: int | None, output: str = "") -> str:
    """The status of ``run_id`` (or of the newest run) in a ``flwr ls --format json`` answer.

    ``flwr ls`` exits 0 with ``"success": false`` and no runs when it cannot reach the SuperLink:
    that, like a listing without runs, is a :class:`RunError` with the CLI's own reason.
    """
    reason = " ".join(str(answer.get("error-message") or output.strip() or "no answer").split())[:500]
    if answer.get("success") is False:
        raise RunError(f"flwr ls failed: {reason}")
    runs = answer.get("runs") or []
    if not runs:
        raise RunError(f"flwr ls lists no run: {reason}")
    newest = max(runs, key=lambda r: int(r.get("run-id", 0)))
    run = next((r for r in runs if run_id is not None and int(r.get("run-id", -1)) == run_id), newest)
    return str(run.get("status", "unknown"))


def run_status(flwr_ls: Callable[[Sequence[str]], str], run_id: int | None) -> str:
    """The run's status: ``flwr_ls(args)`` runs ``flwr ls <args>`` (adding its connection) and
    returns its output; a call that times out or cannot connect is tried again."""
    args = ["--format", "json"] + (["--run-id", str(run_id)] if run_id is not None else [])
    answer: dict[str, Any] = {}
    output = ""
    for attempt in range(1, LS_ATTEMPTS + 1):
        try:
            output = flwr_ls(args)
        except RunError:
            if attempt == LS_ATTEMPTS:
                raise
            continue
        answer = json_of(output)
        if answer.get("success", True):
            break
    return listed_status(answer, run_id, output)


# ----------------------------------------------------------------------------------- flwr run
@dataclass
class RunOutput:
    """What ``flwr run --stream`` printed: appended to ``log_path``; the run id it announced."""

    log_path: Path
    keep_lines: bool = False  # a long simulation prints too much to hold in memory
    run_id: int | None = None
    lines: list[str] = field(default_factory=list)

    def follow(self, process: subprocess.Popen, timeout: float, on_line: Callable[[str], None]) -> int:
        """Every line of ``process`` to the log and ``on_line`` until it exits; its exit code.

        A run that outlives ``timeout`` is a :class:`RunError` (the caller stops the process).
        """
        lines: queue.Queue[str | None] = queue.Queue()
        # A reader thread keeps every wait bounded, also while the run prints nothing.
        threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True).start()
        deadline = time.monotonic() + timeout
        with self.log_path.open("a") as log_file:
            while (line := _next_line(lines, deadline, timeout, self.log_path)) is not None:
                log_file.write(line)
                log_file.flush()
                if self.keep_lines:
                    self.lines.append(line)
                if self.run_id is None and "Successfully started run" in line:
                    self.run_id = parse_run_id(line)
                on_line(line)
        return process.wait(timeout=30)


def _next_line(lines: queue.Queue[str | None], deadline: float, timeout: float, log_path: Path) -> str | None:
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RunError(f"flwr run exceeded its timeout of {timeout:.0f} s; see {log_path}")
        try:
            return lines.get(timeout=min(remaining, 5.0))
        except queue.Empty:
            continue


def _pump(stream: IO[str], out: queue.Queue[str | None]) -> None:
    for line in stream:
        out.put(line)
    out.put(None)


# ------------------------------------------------------------------------------------ results
def check_results(run_dir: Path, rounds: int) -> dict[str, Any]:
    """The summary, after checking ``metrics.jsonl`` has every round and the final metrics are finite."""
    metrics_path, summary_path = run_dir / "metrics.jsonl", run_dir / "summary.json"
    if not summary_path.is_file() or not metrics_path.is_file():
        raise RunError(f"the ServerApp wrote no summary.json/metrics.jsonl in {run_dir}")
    try:
        lines = read_rows(metrics_path)
        summary = json.loads(summary_path.read_text())
    except ValueError as error:
        raise RunError(f"unreadable results in {run_dir}: {error}") from None
    if summary.get("status", "completed") != "completed":
        raise RunError(f"the run is marked {summary['status']!r} in {summary_path}: {summary.get('reason')}")
    if [row.get("round") for row in lines] != list(range(1, rounds + 1)):
        raise RunError(f"metrics.jsonl has rounds {[r.get('round') for r in lines]}, expected 1..{rounds}")
    final = summary.get("final", {})
    main = summary.get("main_metric")
    if main not in final or not isinstance(final[main], (int, float)) or not math.isfinite(final[main]):
        raise RunError(f"final {main} is missing or not finite in {summary_path}")
    return summary


def format_final(summary: Mapping[str, Any]) -> str:
    """``"accuracy=0.9123, loss=0.3000"``: the numeric final metrics of a checked summary."""
    return ", ".join(f"{k}={v:.4f}" for k, v in summary["final"].items() if isinstance(v, (int, float)))


# ---------------------------------------------------------------------------------- exit codes
def one_line(error: BaseException) -> str:
    """The error's message on one line (at most 1000 characters), or its type's name."""
    text = str(error) or type(error).__name__
    return " ".join(text.split())[:1000]


def run_command(work: Callable[[], Path], nothing_running: str) -> int:
    """Run ``work`` with Ctrl-C/SIGTERM raised as ``KeyboardInterrupt``; the command's exit code.

    Prints ``results: <run dir>`` last on success, else one ``error:``/``interrupted:`` line on
    stderr (never a traceback); ``nothing_running`` completes the line of a bare interrupt.
    """
    with signal_guard():
        try:
            run_dir = work()
        except (ConfigError, ValueError, FileNotFoundError) as error:
            return _failed(f"error: {error}", 2)
        except (RunError, RunFailedError) as error:
            return _failed(f"error: {error}", 1)
        except RunInterrupted as interrupted:
            return _failed(f"interrupted: {interrupted}", 130)
        except KeyboardInterrupt:
            return _failed(f"interrupted: {nothing_running}", 130)
        except Exception as error:  # a failure inside the run (a strategy, a client, Flower): named, not a traceback
            return _failed(f"error: the run failed: {type(error).__name__}: {one_line(error)}", 1)
    print(f"results: {run_dir}", flush=True)
    return 0


def _failed(message: str, code: int) -> int:
    print(message, file=sys.stderr)
    return code
