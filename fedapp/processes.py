"""The processes a command starts, stopped together on every exit path.

Flower's processes do not stay in one process group: the SuperLink starts ``flower-superexec`` in a
new session, which starts ``flwr-simulation``, which starts Ray's daemons and workers. Signalling a
process group therefore misses most of them. A :class:`ProcessTree` finds every process it is
responsible for in two ways, so that one missed by either is still found:

- the descendants (``psutil``) of every process it started, remembered as they are seen, so that a
  child whose parent died (and was re-parented to init) is not forgotten;
- every process whose environment carries this tree's token (``FEDAPP_PROCESS_TOKEN``): each
  process started through :meth:`ProcessTree.env` inherits it, and so do their children.

:meth:`ProcessTree.stop` sends SIGTERM to all of them, waits, SIGKILLs what is left and returns
what it stopped; only then may a command say what it stopped. :func:`stop_trees` stops many
started processes with one shared grace period, :func:`signal_tree` crashes one with everything it
started, :func:`descendants` lists what a process started; a :class:`ManagedProcess` is one started
process with its name and log. :func:`signals_raise_interrupt` makes
SIGTERM (and SIGINT, also where the launching shell set it to "ignore") raise ``KeyboardInterrupt``
so that ``finally`` blocks run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import psutil

TOKEN_VAR = "FEDAPP_PROCESS_TOKEN"
STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL


class ProcessTree:
    """Processes started by one command (and everything they start); :meth:`stop` ends them all."""

    def __init__(self) -> None:
        self.token = uuid.uuid4().hex
        self.roots: list[subprocess.Popen] = []
        self._known: dict[tuple[int, float], psutil.Process] = {}

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) plus the token children inherit."""
        return {**(os.environ if base is None else base), TOKEN_VAR: self.token}

    def popen(self, argv: Sequence[str], env: Mapping[str, str] | None = None, **kwargs: Any) -> subprocess.Popen:
        """``subprocess.Popen`` with the token in the environment; the process is tracked."""
        process = subprocess.Popen(list(argv), env=self.env(env), **kwargs)
        self.track(process)
        return process

    def track(self, process: subprocess.Popen) -> None:
        """Stop ``process`` (and its descendants) with this tree."""
        self.roots.append(process)
        self._remember(process.pid)

    def members(self) -> list[psutil.Process]:
        """Every living process of this tree: tracked roots, their descendants, token carriers."""
        for process in self.roots:
            if process.returncode is None:  # once reaped, its PID may belong to another process
                self._remember(process.pid)
        for proc in list(self._known.values()):
            with contextlib.suppress(psutil.Error):
                for child in proc.children(recursive=True):
                    self._add(child)
        me = os.getpid()
        for proc in psutil.process_iter():
            if proc.pid == me:
                continue
            with contextlib.suppress(psutil.Error, OSError):
                if proc.environ().get(TOKEN_VAR) == self.token:
                    self._add(proc)
        return [p for p in self._known.values() if _alive(p)]

    def stop(self, grace: float = STOP_GRACE) -> list[str]:
        """SIGTERM every member, SIGKILL those alive after ``grace`` s; returns ``name(pid)`` of each."""
        stopped: dict[int, str] = {}
        deadline = time.monotonic() + grace
        # Members may start new processes while they shut down: look again until nothing is left.
        while True:
            alive = self.members()
            if not alive:
                break
            for proc in alive:
                with contextlib.suppress(psutil.Error):
                    stopped.setdefault(proc.pid, f"{_name(proc)}({proc.pid})")
                    proc.send_signal(signal.SIGTERM if time.monotonic() < deadline else signal.SIGKILL)
            psutil.wait_procs(alive, timeout=1.0)
            if time.monotonic() > deadline + 5 * grace:
                break  # unkillable (e.g. uninterruptible I/O); reported by still_running()
        for process in self.roots:
            with contextlib.suppress(Exception):
                process.wait(timeout=1.0)  # reap our direct children: no zombies left behind
        return list(stopped.values())

    def still_running(self) -> list[str]:
        """``name(pid)`` of each member still alive (after :meth:`stop`: the unkillable ones)."""
        return [f"{_name(p)}({p.pid})" for p in self.members()]

    def _remember(self, pid: int) -> None:
        with contextlib.suppress(psutil.Error):
            self._add(psutil.Process(pid))

    def _add(self, proc: psutil.Process) -> None:
        with contextlib.suppress(psutil.Error):
            self._known.setdefault((proc.pid, proc.create_time()), proc)


@dataclass
class ManagedProcess:
    """A named process a harness started in its own process group, writing to its own log file."""

    name: str
    popen: subprocess.Popen
    log_path: Path
    argv: list[str]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""

    def wait(self, timeout: float) -> int:
        """The exit code; raises ``subprocess.TimeoutExpired`` after ``timeout`` seconds."""
        return self.popen.wait(timeout=timeout)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _name(proc: psutil.Process) -> str:
    """The command a user would recognise (``flower-superlink``, not ``python3``)."""
    try:
        cmdline = proc.cmdline()
        if len(cmdline) > 1 and os.path.basename(cmdline[0]).startswith("python"):
            script = next((a for a in cmdline[1:] if not a.startswith("-")), cmdline[1])
            return os.path.basename(script)
        return os.path.basename(cmdline[0]) if cmdline else proc.name()
    except psutil.Error:
        return "?"


def summarize_stopped(names: Sequence[str]) -> str:
    """``"5 processes (flower-superlink, flower-superexec, raylet, ...)"``."""
    if not names:
        return "no process was running"
    kinds = list(dict.fromkeys(name.rsplit("(", 1)[0] for name in names))
    shown = ", ".join(kinds[:6]) + (", ..." if len(kinds) > 6 else "")
    return f"{len(names)} process{'es' if len(names) != 1 else ''} ({shown})"


@contextlib.contextmanager
def signals_raise_interrupt() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise ``KeyboardInterrupt`` (restored afterwards)."""

    def _interrupt(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def signal_guard() -> contextlib.AbstractContextManager[None]:
    """:func:`signals_raise_interrupt` in the main thread; elsewhere nothing (handlers are main-thread only)."""
    if threading.current_thread() is threading.main_thread():
        return signals_raise_interrupt()
    return contextlib.nullcontext()


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Within the block (a cleanup), SIGINT and SIGTERM are held back and delivered after it."""
    blocked = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def stop_tree(process: subprocess.Popen, grace: float = STOP_GRACE) -> list[str]:
    """Stop ``process`` and every descendant it has now (by PID, whatever their process group)."""
    return stop_trees([process], grace)


def stop_trees(processes: Sequence[subprocess.Popen], grace: float = STOP_GRACE) -> list[str]:
    """:func:`stop_tree` for many processes within one shared ``grace`` period (not one per process)."""
    tree = ProcessTree()
    for process in processes:
        tree.track(process)
    return tree.stop(grace)


def signal_tree(process: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to ``process`` and every descendant it has now, e.g. SIGKILL to crash a node."""
    try:
        root = psutil.Process(process.pid)
        members = [root, *root.children(recursive=True)]
    except psutil.Error:
        return
    for proc in members:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)  # psutil checks the PID still names the same process


def descendants(pid: int) -> list[tuple[int, float]]:
    """(pid, start time) of every descendant ``pid`` has now; empty when ``pid`` is gone."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    found = []
    for child in children:
        with contextlib.suppress(psutil.Error):
            found.append((child.pid, child.create_time()))
    return found
