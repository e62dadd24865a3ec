"""Which clients a round asks, and in which order replies are read: seeded and by partition id.

Flower's ``SimpleClientManager.sample`` uses the unseeded global ``random`` and Flower's node ids
change with every ``flwr run`` (and a resumed run gets new ones). Here the sample is a function of
(seed, round, attempt) over the clients ordered by *partition id*, and replies are aggregated in
partition-id order, so a run, a repeated run and a resumed run sample and sum alike.
"""

from __future__ import annotations

import concurrent.futures
from logging import WARNING
from typing import Any, Callable, Sequence

import numpy as np
from flwr.common import Code, GetPropertiesIns, Scalar, log
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.criterion import Criterion

from fedapp.protocol import PARTITION_METRIC
from strategies.screening import describe_failure, short_reason

# How long a round waits for min-available-clients to be connected before it counts as insufficient.
AVAILABILITY_TIMEOUT_S = 600


def sample_indices(num_available: int, num_clients: int, seed: int, server_round: int, attempt: int,
                   purpose: int) -> list[int]:
    """``num_clients`` distinct indices of ``range(num_available)``, sorted, fixed by the arguments."""
    if num_clients >= num_available:
        return list(range(num_available))
    rng = np.random.default_rng([seed, server_round, attempt, purpose])
    return sorted(int(i) for i in rng.choice(num_available, size=num_clients, replace=False))


class SeededClientManager(ClientManager):
    """A view of the real client manager whose ``sample`` is a seeded draw over an ordered list of clients.

    Flower's ``SimpleClientManager.sample`` uses the unseeded global ``random``; this makes the
    sample a function of (seed, round, attempt) and of the order ``order(clients)`` puts the
    available clients in. The strategy orders them by partition id, which, unlike Flower's node
    ids, is the same in every run and after a resume.
    """

    def __init__(self, inner: ClientManager, seed: int, server_round: int, attempt: int, purpose: int,
                 wait_timeout: int = AVAILABILITY_TIMEOUT_S,
                 order: Callable[[dict[str, ClientProxy]], list[str]] | None = None) -> None:
        self.inner = inner
        self.key = (seed, server_round, attempt, purpose)
        self.wait_timeout = wait_timeout
        self.order = order or (lambda clients: sorted(clients, key=_cid_key))
        self.shortfall: str | None = None  # why the last sample came back short, if it did

    def num_available(self) -> int:
        return self.inner.num_available()

    def register(self, client: ClientProxy) -> bool:
        return self.inner.register(client)

    def unregister(self, client: ClientProxy) -> None:
        self.inner.unregister(client)

    def all(self) -> dict[str, ClientProxy]:
        return self.inner.all()

    def wait_for(self, num_clients: int, timeout: int) -> bool:
        return self.inner.wait_for(num_clients, timeout)

    def sample(self, num_clients: int, min_num_clients: int | None = None,
               criterion: Criterion | None = None) -> list[ClientProxy]:
        needed = max(num_clients, min_num_clients or 0)
        if not self.inner.wait_for(needed, self.wait_timeout):
            self.shortfall = (f"only {self.inner.num_available()} clients connected after {self.wait_timeout} s, "
                              f"{needed} needed (min-available-clients / min-fit-clients)")
            return []
        clients = {cid: proxy for cid, proxy in self.inner.all().items()
                   if criterion is None or criterion.select(proxy)}
        if num_clients > len(clients):
            self.shortfall = f"only {len(clients)} clients available, {num_clients} needed"
            return []
        if num_clients == len(clients):  # everyone: no draw, so no need to know the order
            return [clients[cid] for cid in sorted(clients, key=_cid_key)]
        ids = self.order(clients)
        return [clients[ids[i]] for i in sample_indices(len(ids), num_clients, *self.key)]


def _cid_key(cid: str) -> tuple[int, Any]:
    return (0, int(cid)) if str(cid).lstrip("-").isdigit() else (1, str(cid))


def ask_partition(proxy: ClientProxy, timeout: float | None = AVAILABILITY_TIMEOUT_S) -> int | None:
    """The partition id a client reports in its properties, or None if it reports none or fails."""
    try:
        res = proxy.get_properties(GetPropertiesIns(config={}), timeout, None)
    except Exception as error:  # noqa: BLE001 - an unreachable client is ordered last, not fatal
        log(WARNING, "node %s did not report its partition id: %s", proxy.cid, short_reason(error))
        return None
    value = res.properties.get(PARTITION_METRIC) if res.status.code == Code.OK else None
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class PartitionOrder:
    """The partition id of each node id, learnt from replies (or asked once), and sorting by it."""

    def __init__(self) -> None:
        self._partition_of: dict[str, int] = {}  # node id -> partition id

    def partition_key(self, cid: str, metrics: dict[str, Scalar] | None = None) -> tuple[int, Any]:
        """Sort key of a client: its partition id (from ``metrics`` or learnt earlier), else its node id last."""
        if metrics is not None and PARTITION_METRIC in metrics:
            self._partition_of[cid] = int(metrics[PARTITION_METRIC])
        partition = self._partition_of.get(cid)
        return (0, partition, 0) if partition is not None else (1, 0, _cid_key(cid))

    def in_partition_order(self, results: Sequence[tuple[ClientProxy, Any]]) -> list[tuple[ClientProxy, Any]]:
        """Fit or evaluate replies sorted by the partition id each carries (stable across runs)."""
        return sorted(results, key=lambda pair: self.partition_key(str(pair[0].cid), pair[1].metrics))

    def partition_order(self, clients: dict[str, ClientProxy]) -> list[str]:
        """The node ids of ``clients`` in partition-id order; unknown partitions are asked for first."""
        unknown = [cid for cid in clients if cid not in self._partition_of]
        if unknown:
            with concurrent.futures.ThreadPoolExecutor(max_workers=min(len(unknown), 16)) as pool:
                answers = list(pool.map(lambda cid: ask_partition(clients[cid]), unknown))
            for cid, partition in zip(unknown, answers):
                if partition is not None:
                    self._partition_of[cid] = partition
        return sorted(clients, key=self.partition_key)

    def client_name(self, cid: str) -> str:
        """``node <id> (partition <k>)`` for logs."""
        partition = self._partition_of.get(cid)
        return f"node {cid}" + (f" (partition {partition})" if partition is not None else "")

    def describe(self, failure: Any) -> str:
        """One line about a failed reply, naming the client by node and partition."""
        cid = getattr(failure, "cid", None)
        if cid is not None:
            return f"{self.client_name(str(cid))}: {short_reason(failure.cause)}"
        return describe_failure(failure)
