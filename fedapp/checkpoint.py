"""Server checkpoints: what a run needs to continue after its machine, process or SuperLink died.

``<run dir>/checkpoint.npz`` is written by the strategy every ``checkpoint-every`` rounds, after
the last round, and before a run stops on ``on-insufficient-clients=fail``. It holds

- ``param_0000`` ...: the global parameters the server holds after that round (what
  ``aggregate_fit`` returned, i.e. what the next round sends);
- ``state_<name>``: the strategy's own state from :meth:`FederatedStrategy.strategy_state`
  (e.g. SCAFFOLD's server control variate, FedLoGe's SSE-C);
- ``rng_numpy``, ``rng_torch``: the server process's numpy and torch global RNG states;
- ``meta``: one JSON string with the format version, the round, the resolved run config, every
  ``metrics.jsonl`` row so far, the Python ``random`` state and the *generations* of the run
  (see below).

It is written atomically (:func:`fedapp.atomic_io.atomic_write_bytes`), so a crash at any moment
leaves either the old or the new checkpoint, never half of one. Reading verifies every member (the
zip CRCs) and the metadata, and any failure is a :class:`CheckpointError` that says so.

Resuming (``resume=<run dir>``) refuses, naming the keys, when the run config differs from the
checkpoint's in anything but :data:`RESUMABLE_KEYS` (where and how long to run, how to treat
failures), so a checkpoint is never loaded into another model, algorithm, dataset or partition.

**Generations.** Each server start (fresh or resumed) is one generation with a random token; a
resumed generation records the checkpoint round it started from. Clients tag the private state
they save on disk (``state-dir``) with the generation that trained it, so that after a resume they
restore exactly the state as of the checkpoint round, not a newer one from the rounds the server
forgot (see :mod:`fedapp.node_state`).
"""

from __future__ import annotations

import io
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from fedapp.atomic_io import atomic_write_bytes, jsonable

CHECKPOINT_FILE = "checkpoint.npz"
FORMAT_VERSION = 1

# Keys that may differ between a checkpoint and the run that resumes it: where and how long to run,
# what to write besides the results, and how to treat failures and stragglers. Everything else
# (algorithm, dataset, partition, model, optimisation, seed, each algorithm's own keys) must be
# equal, or resuming is refused.
RESUMABLE_KEYS = frozenset({
    "num-server-rounds", "output-dir", "resume", "preset", "checkpoint-every", "state-dir", "device",
    "eval-batch-size", "data-root", "fraction-fit", "fraction-evaluate", "min-fit-clients",
    "min-available-clients", "on-insufficient-clients", "round-retries", "max-update-norm",
    "tensorboard", "num-workers",
})


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or does not belong to this run config."""


@dataclass(frozen=True)
class Generation:
    """One server start of a run: its token and the checkpoint round it resumed from (0: fresh)."""

    token: str
    resumed_from: int


def new_generation(resumed_from: int = 0) -> Generation:
    return Generation(uuid.uuid4().hex[:12], resumed_from)


def encode_generations(generations: Sequence[Generation]) -> str:
    """``"token@round,token@round"``: how the chain travels in the fit/evaluate config."""
    return ",".join(f"{g.token}@{g.resumed_from}" for g in generations)


def decode_generations(text: str) -> list[Generation]:
    chain = []
    for item in filter(None, (part.strip() for part in str(text).split(","))):
        token, _, resumed_from = item.partition("@")
        chain.append(Generation(token, int(resumed_from or 0)))
    return chain


@dataclass(frozen=True)
class Checkpoint:
    """The content of one ``checkpoint.npz``."""

    server_round: int
    parameters: list[np.ndarray]
    strategy_state: dict[str, np.ndarray]
    config: dict[str, Any]
    rows: list[dict[str, Any]]
    generations: list[Generation]
    rng: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def capture_rng() -> dict[str, Any]:
    """The server process's Python, numpy and torch (CPU) global RNG states."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy_meta": [name, int(pos), int(has_gauss), float(cached)],
        "numpy_keys": np.asarray(keys, dtype=np.uint32),
        "torch": torch.get_rng_state().numpy().copy(),
    }


def restore_rng(rng: Mapping[str, Any]) -> None:
    """Set the global RNGs to what :func:`capture_rng` returned (missing parts are left alone)."""
    if "python" in rng:
        version, internal, gauss = rng["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy_keys" in rng and "numpy_meta" in rng:
        name, pos, has_gauss, cached = rng["numpy_meta"]
        np.random.set_state((name, np.asarray(rng["numpy_keys"], np.uint32), pos, has_gauss, cached))
    if "torch" in rng:
        torch.set_rng_state(torch.from_numpy(np.asarray(rng["torch"], np.uint8).copy()))


def save_checkpoint(run_dir: str | Path, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` to ``<run_dir>/checkpoint.npz`` atomically; returns the path."""
    run_dir = Path(run_dir)
    rng = checkpoint.rng or capture_rng()
    meta = {
        "format": FORMAT_VERSION,
        "round": int(checkpoint.server_round),
        "num_parameters": len(checkpoint.parameters),
        "strategy_state": sorted(checkpoint.strategy_state),
        "config": checkpoint.config,
        "rows": checkpoint.rows,
        "generations": [[g.token, g.resumed_from] for g in checkpoint.generations],
        "rng_python": rng.get("python"),
        "rng_numpy_meta": rng.get("numpy_meta"),
        "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    members: dict[str, np.ndarray] = {"meta": np.array(json.dumps(jsonable(meta)))}
    for index, array in enumerate(checkpoint.parameters):
        members[f"param_{index:04d}"] = np.asarray(array)
    for name, array in checkpoint.strategy_state.items():
        members[f"state_{name}"] = np.asarray(array)
    if "numpy_keys" in rng:
        members["rng_numpy"] = np.asarray(rng["numpy_keys"], np.uint32)
    if "torch" in rng:
        members["rng_torch"] = np.asarray(rng["torch"], np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **members)
    return atomic_write_bytes(run_dir / CHECKPOINT_FILE, buffer.getvalue())


def load_checkpoint(run_dir: str | Path) -> Checkpoint:
    """Read and verify ``<run_dir>/checkpoint.npz``; a :class:`CheckpointError` says what is wrong."""
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(
            f"resume={str(run_dir)!r}: no {CHECKPOINT_FILE} there (the run wrote none: checkpoint-every=0, "
            "or it stopped before its first checkpoint); start a new run instead"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            members = {name: archive[name] for name in archive.files}  # reading checks each CRC
        meta = json.loads(str(members["meta"]))
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"format {meta.get('format')!r}, this code reads format {FORMAT_VERSION}")
        count = int(meta["num_parameters"])
        parameters = [members[f"param_{i:04d}"] for i in range(count)]
        state = {name: members[f"state_{name}"] for name in meta["strategy_state"]}
        rng: dict[str, Any] = {}
        if meta.get("rng_python") is not None:
            rng["python"] = meta["rng_python"]
        if "rng_numpy" in members and meta.get("rng_numpy_meta") is not None:
            rng["numpy_keys"], rng["numpy_meta"] = members["rng_numpy"], meta["rng_numpy_meta"]
        if "rng_torch" in members:
            rng["torch"] = members["rng_torch"]
        return Checkpoint(
            server_round=int(meta["round"]), parameters=parameters, strategy_state=state,
            config=dict(meta["config"]), rows=list(meta["rows"]),
            generations=[Generation(str(t), int(r)) for t, r in meta["generations"]], rng=rng, path=path,
        )
    except CheckpointError:
        raise
    except Exception as error:  # zipfile.BadZipFile, KeyError, ValueError, JSON errors, ...
        raise CheckpointError(
            f"{path} is corrupt or unreadable ({type(error).__name__}: {error}); it cannot be resumed. "
            "Restore it from a copy, or start a new run"
        ) from None


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The keys outside :data:`RESUMABLE_KEYS` whose values differ (or exist on one side only)."""
    keys = (set(saved) | set(current)) - RESUMABLE_KEYS
    return sorted(k for k in keys if k not in saved or k not in current or saved[k] != current[k])


def check_resumable(checkpoint: Checkpoint, config: Mapping[str, Any]) -> None:
    """Refuse a checkpoint written under another model/algorithm/dataset/partition/training config."""
    differing = config_differences(checkpoint.config, config)
    if differing:
        details = "; ".join(
            f"{k}: {checkpoint.config.get(k, '<absent>')!r} in the checkpoint, {config.get(k, '<absent>')!r} now"
            for k in differing
        )
        raise CheckpointError(
            f"resume={config.get('resume')!r}: the run config differs from the checkpoint's in "
            f"{', '.join(differing)} ({details}). Only these keys may change on resume: "
            f"{', '.join(sorted(RESUMABLE_KEYS))}"
        )
    total = int(config["num-server-rounds"])
    if total <= checkpoint.server_round:
        raise CheckpointError(
            f"num-server-rounds={total} is not allowed with resume: the checkpoint already holds round "
            f"{checkpoint.server_round}; allowed: num-server-rounds > {checkpoint.server_round}"
        )


def open_for_resume(run_dir: str | Path, config: Mapping[str, Any]) -> Checkpoint:
    """The verified checkpoint of ``run_dir`` after checking that ``config`` may continue it."""
    checkpoint = load_checkpoint(run_dir)
    check_resumable(checkpoint, config)
    return checkpoint
