"""TESTING AID: make chosen clients fail on purpose (environment variable ``FEDAPP_FAULT_INJECTION``).

Real Flower simulations run every client in separate Ray worker processes, where a test cannot
monkeypatch anything; this variable lets a test (or a user checking their deployment) make one
client raise or send a poisoned update, to prove that the server excludes it, logs it and finishes
the run. It is opt-in: the ClientApp wraps its client in :class:`FaultInjectingClient` only where
the variable is set in the environment of the process that runs the ClientApp (``python -m
fedapp.simulate --fault-injection SPEC`` sets it for a simulation); it is not a run-config key.

Syntax: comma-separated ``<kind>:<partition-id>:<round>`` items, ``<round>`` may be ``*`` (every
round). Kinds:

- ``raise``: the client raises ``InjectedFault`` instead of training (the server sees a failure);
- ``nan``: the client trains, then replaces every floating-point array it sends by NaN (the server
  must reject the update as non-finite).

Example: ``FEDAPP_FAULT_INJECTION="raise:3:1,nan:5:*"``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from flwr.client import Client
from flwr.common import FitIns, FitRes, ndarrays_to_parameters, parameters_to_ndarrays

from fedapp.client_layer import ClientLayer
from fedapp.options import ConfigError
from fedapp.protocol import server_round_of

ENV_VAR = "FEDAPP_FAULT_INJECTION"
KINDS = ("raise", "nan")


class InjectedFault(RuntimeError):
    """The failure ``FEDAPP_FAULT_INJECTION`` asked for (never raised unless the variable is set)."""


@dataclass(frozen=True)
class Fault:
    kind: str
    partition_id: int
    server_round: int | None  # None: every round


def parse_faults(spec: str) -> tuple[Fault, ...]:
    """The faults of a ``FEDAPP_FAULT_INJECTION`` value; ``ValueError`` says what is wrong with it."""
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


def faults_from_environment() -> tuple[Fault, ...]:
    """The faults ``FEDAPP_FAULT_INJECTION`` asks for (none when it is unset); ConfigError if malformed."""
    spec = os.environ.get(ENV_VAR, "")
    try:
        return parse_faults(spec)
    except ValueError as error:
        raise ConfigError(f"{ENV_VAR}={spec!r} is not allowed: {error}") from None


class FaultInjectingClient(ClientLayer):
    """A Client that raises or poisons its update where ``faults`` say, and otherwise passes messages on."""

    def __init__(self, inner: Client, faults: tuple[Fault, ...], partition_id: int) -> None:
        super().__init__(inner)
        self.faults = faults
        self.partition_id = partition_id

    def kind_for(self, server_round: int) -> str | None:
        for fault in self.faults:
            if fault.partition_id == self.partition_id and fault.server_round in (None, server_round):
                return fault.kind
        return None

    def fit(self, ins: FitIns) -> FitRes:
        server_round = server_round_of(ins.config)
        kind = self.kind_for(server_round)
        if kind == "raise":
            raise InjectedFault(f"fault-injection: partition {self.partition_id} raises in round {server_round}")
        res = self.inner.fit(ins)
        if kind == "nan":
            poisoned = [np.full_like(a, np.nan) if np.issubdtype(a.dtype, np.floating) else a
                        for a in parameters_to_ndarrays(res.parameters)]
            res.parameters = ndarrays_to_parameters(poisoned)
        return res
