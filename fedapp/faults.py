"""TESTING AID: make chosen clients fail on purpose (run-config key ``fault-injection``).

Real Flower simulations run every client in separate Ray worker processes, where a test cannot
monkeypatch anything; this key lets a test (or a user checking their deployment) make one client
raise or send a poisoned update, to prove that the server excludes it, logs it and finishes the run.
It is off (``""``) by default and never needed for training.

Syntax: comma-separated ``<kind>:<partition-id>:<round>`` items, ``<round>`` may be ``*`` (every
round). Kinds:

- ``raise``: the client raises ``InjectedFault`` instead of training (the server sees a failure);
- ``nan``: the client trains, then replaces every floating-point array it sends by NaN (the server
  must reject the update as non-finite).

Example: ``fault-injection="raise:3:1,nan:5:*"``.
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("raise", "nan")


class InjectedFault(RuntimeError):
    """The failure ``fault-injection`` asked for (never raised unless the key is set)."""


@dataclass(frozen=True)
class Fault:
    kind: str
    partition_id: int
    server_round: int | None  # None: every round


def parse_faults(spec: str) -> tuple[Fault, ...]:
    """The faults of a ``fault-injection`` value; ``ValueError`` says what is wrong with it."""
    faults = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        pieces = item.split(":")
        if len(pieces) != 3 or pieces[0] not in KINDS:
            raise ValueError(f"item {item!r} is not <kind>:<partition-id>:<round> with kind in {', '.join(KINDS)}")
        kind, partition, server_round = pieces
        try:
            partition_id = int(partition)
            round_number = None if server_round == "*" else int(server_round)
        except ValueError:
            raise ValueError(f"item {item!r}: partition-id must be an integer and round an integer or '*'") from None
        if partition_id < 0 or (round_number is not None and round_number < 1):
            raise ValueError(f"item {item!r}: partition-id must be >= 0 and round >= 1")
        faults.append(Fault(kind, partition_id, round_number))
    return tuple(faults)


def fault_for(spec: str, partition_id: int, server_round: int) -> str | None:
    """The kind of fault ``partition_id`` must show in ``server_round`` (None: behave normally)."""
    for fault in parse_faults(spec) if spec else ():
        if fault.partition_id == partition_id and fault.server_round in (None, server_round):
            return fault.kind
    return None
