"""A client's private state on its node's disk (``state-dir``), so that restarts lose nothing.

Flower keeps ``context.state`` (local heads, control variates, personal models) in memory for one
run on one SuperNode process. With ``state-dir`` set, the client writes its ``context.state`` after
every ``fit`` to

    <state-dir>/node-<partition-id>/r<round>-<generation>.npz

and, on the first message a node receives in a run (a restarted SuperNode, or a resumed run),
loads the right file back into ``context.state`` before the client is built.

"The right file" is exact, not just the newest: the server sends its chain of *generations*
(:mod:`fedapp.checkpoint`): ``g0@0, g1@c1, g2@c2, ...``, where generation ``g_i`` resumed from the
checkpoint of round ``c_i``. A file written by ``g_i`` at round ``r`` is valid iff ``g_i`` is in
the chain and ``r <= c_{i+1}`` (the round the next generation resumed from; unbounded for the
current one): state the crashed server never checkpointed is ignored, so a resumed run continues
from the same client state as an uninterrupted one. Among valid files the newest round wins.

Pruning keeps what any future resume can need: with checkpoints every ``k`` rounds, the last
checkpoint before round ``r`` is ``K = k * floor((r - 1) / k)``; the store keeps every valid file
with round ``> K`` and the newest valid one with round ``<= K``, and deletes invalid files of its
own chain. Files of other runs (generations not in the chain) are left untouched.

The format is one ``.npz`` per save: arrays as ``a<i>`` members plus a JSON ``meta`` member that
maps them back to (record name, array key) and holds the metric/config records.
"""

from __future__ import annotations

import base64
import io
import json
import re
from dataclasses import dataclass
from logging import WARNING
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.client import Client
from flwr.common import EvaluateIns, EvaluateRes, FitIns, FitRes, log

from fedapp.atomic_io import atomic_write_bytes
from fedapp.checkpoint import Generation, decode_generations
from fedapp.client_layer import ClientLayer
from fedapp.protocol import GENERATIONS_KEY, server_round_of

# context.state entry marking that this node already restored from disk in this run.
RESTORED_MARKER = "fedapp.node-state-restored"
_NAME = re.compile(r"^r(\d+)-([0-9A-Za-z]+)\.npz$")


@dataclass(frozen=True)
class StateFile:
    path: Path
    server_round: int
    token: str


def valid_until(chain: Sequence[Generation]) -> dict[str, float]:
    """Generation token -> the last round whose state it wrote that is still valid."""
    limits: dict[str, float] = {}
    for index, generation in enumerate(chain):
        limits[generation.token] = chain[index + 1].resumed_from if index + 1 < len(chain) else float("inf")
    return limits


def last_checkpoint_before(server_round: int, checkpoint_every: int) -> int:
    """The newest round a checkpoint can exist for while round ``server_round`` runs (0 = none)."""
    if checkpoint_every <= 0:
        return server_round - 1  # no checkpoints: only the newest state can ever be needed
    return checkpoint_every * ((server_round - 1) // checkpoint_every)


class NodeStateStore:
    """The saved private states of one partition under ``state_dir``."""

    def __init__(self, state_dir: str | Path, partition_id: int) -> None:
        self.directory = Path(state_dir).expanduser() / f"node-{partition_id}"

    def files(self) -> list[StateFile]:
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            match = _NAME.match(path.name)
            if match:
                found.append(StateFile(path, int(match.group(1)), match.group(2)))
        return found

    def valid_files(self, chain: Sequence[Generation]) -> list[StateFile]:
        """Files this chain may restore from, oldest first (ties: the later generation last)."""
        limits = valid_until(chain)
        order = {g.token: i for i, g in enumerate(chain)}
        valid = [f for f in self.files() if f.token in limits and f.server_round <= limits[f.token]]
        return sorted(valid, key=lambda f: (f.server_round, order[f.token]))

    def restore(self, chain: Sequence[Generation]) -> tuple[RecordDict, int] | None:
        """The newest valid saved state and its round, or None if there is none."""
        valid = self.valid_files(chain)
        if not valid:
            return None
        newest = valid[-1]
        return read_record_dict(newest.path), newest.server_round

    def save(self, state: RecordDict, server_round: int, chain: Sequence[Generation], checkpoint_every: int) -> Path:
        """Write ``state`` as trained in ``server_round`` by the current (last) generation, then prune."""
        if not chain:
            raise ValueError("cannot save node state without the server's generation chain")
        path = self.directory / f"r{server_round:06d}-{chain[-1].token}.npz"
        atomic_write_bytes(path, record_dict_bytes(state))
        self.prune(chain, last_checkpoint_before(server_round, checkpoint_every))
        return path

    def prune(self, chain: Sequence[Generation], keep_after: int) -> None:
        """Delete this chain's files no resume can need (see the module docstring)."""
        tokens = {g.token for g in chain}
        valid = self.valid_files(chain)
        keep = {f.path for f in valid if f.server_round > keep_after}
        older = [f for f in valid if f.server_round <= keep_after]
        if older:
            keep.add(older[-1].path)
        for stale in self.files():
            if stale.token in tokens and stale.path not in keep:
                stale.path.unlink(missing_ok=True)


def record_dict_bytes(state: RecordDict) -> bytes:
    """``state`` (ArrayRecords, MetricRecords, ConfigRecords) as the bytes of one ``.npz``."""
    members: dict[str, np.ndarray] = {}
    records: list[dict[str, Any]] = []
    for name, record in state.items():
        if name == RESTORED_MARKER:
            continue
        if isinstance(record, ArrayRecord):
            keys = []
            for key, array in record.items():
                member = f"a{len(members)}"
                members[member] = array.numpy()
                keys.append([key, member])
            records.append({"name": name, "kind": "array", "arrays": keys})
        elif isinstance(record, MetricRecord):
            records.append({"name": name, "kind": "metric", "values": dict(record)})
        elif isinstance(record, ConfigRecord):
            values = {k: _encode_config_value(v) for k, v in record.items()}
            records.append({"name": name, "kind": "config", "values": values})
        else:
            raise TypeError(f"context.state[{name!r}] is a {type(record).__name__}, which cannot be saved")
    members["meta"] = np.array(json.dumps({"format": 1, "records": records}))
    buffer = io.BytesIO()
    np.savez(buffer, **members)
    return buffer.getvalue()


def read_record_dict(path: str | Path) -> RecordDict:
    """The RecordDict saved by :func:`record_dict_bytes` in ``path``."""
    with np.load(path, allow_pickle=False) as archive:
        members = {name: archive[name] for name in archive.files}
    meta = json.loads(str(members["meta"]))
    state = RecordDict()
    for record in meta["records"]:
        if record["kind"] == "array":
            arrays = {key: Array(np.ascontiguousarray(members[member])) for key, member in record["arrays"]}
            state[record["name"]] = ArrayRecord(array_dict=arrays)
        elif record["kind"] == "metric":
            state[record["name"]] = MetricRecord(record["values"])
        else:
            state[record["name"]] = ConfigRecord({k: _decode_config_value(v) for k, v in record["values"].items()})
    return state


def load_into(state: RecordDict, saved: RecordDict) -> None:
    """Replace ``state``'s entries by ``saved``'s (a rebuilt node starts from what it had saved)."""
    for name in list(state.keys()):
        if name != RESTORED_MARKER:
            del state[name]
    for name, record in saved.items():
        state[name] = record


def warn_unrestorable(partition_id: int, reason: str) -> None:
    log(WARNING, "node state of partition %s not restored: %s", partition_id, reason)


def _encode_config_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return {"bytes_list": [base64.b64encode(v).decode("ascii") for v in value]}
    return value


def _decode_config_value(value: Any) -> Any:
    if isinstance(value, dict) and "bytes" in value:
        return base64.b64decode(value["bytes"])
    if isinstance(value, dict) and "bytes_list" in value:
        return [base64.b64decode(v) for v in value["bytes_list"]]
    return value


class NodeStateClient(ClientLayer):
    """A Client whose ``context.state`` outlives the process: restored before the node's first message, saved after every fit.

    Wraps the Client of a ClientApp (``fedapp.client_app``). On the first fit or evaluate of a run it
    loads the newest valid saved state of its partition into ``context.state`` (the server's
    generation chain decides which is valid) *before* the inner client is built from it; after each
    fit it writes ``context.state`` back.
    """

    def __init__(self, inner: Client, state: RecordDict, state_dir: str, partition_id: int,
                 checkpoint_every: int) -> None:
        super().__init__(inner)
        self.state = state
        self.store = NodeStateStore(state_dir, partition_id)
        self.partition_id = partition_id
        self.checkpoint_every = checkpoint_every

    def fit(self, ins: FitIns) -> FitRes:
        self.restore_once(ins.config)
        res = self.inner.fit(ins)
        self.persist(ins.config)
        return res

    def evaluate(self, ins: EvaluateIns) -> EvaluateRes:
        self.restore_once(ins.config)
        return self.inner.evaluate(ins)

    def restore_once(self, config: dict[str, Any]) -> None:
        """On this node's first message in the run, load its saved state into ``context.state``."""
        if RESTORED_MARKER in self.state:
            return
        server_round = server_round_of(config)
        self.state[RESTORED_MARKER] = ConfigRecord({"round": server_round})
        chain = decode_generations(str(config.get(GENERATIONS_KEY, "")))
        if not chain:
            warn_unrestorable(self.partition_id, f"the server sent no {GENERATIONS_KEY!r} config key")
            return
        found = self.store.restore(chain)
        if found is None:
            return
        saved, saved_round = found
        load_into(self.state, saved)
        self.state[RESTORED_MARKER] = ConfigRecord({"round": server_round, "saved-round": saved_round})

    def persist(self, config: dict[str, Any]) -> None:
        """Write ``context.state`` after a fit."""
        chain = decode_generations(str(config.get(GENERATIONS_KEY, "")))
        if not chain:
            warn_unrestorable(self.partition_id, f"not saved: the server sent no {GENERATIONS_KEY!r} config key")
            return
        self.store.save(self.state, server_round_of(config), chain, self.checkpoint_every)
