"""The server loop of every run: Flower's ``Server`` plus resume, round retries and named failures.

:class:`FederationServer` runs the same round as ``flwr.server.Server`` (``configure_fit`` -> fit
on the clients -> ``aggregate_fit`` -> ``evaluate`` -> federated evaluation) with three changes:

- **Resume.** It starts at ``strategy.first_round`` (1, or the checkpoint round + 1 after
  ``initialize_parameters`` restored a checkpoint) and counts up to ``num_rounds``, so every
  strategy hook, the recorder and the clients' ``server-round`` see the true round number. Flower's
  own loop always counts ``1..num_rounds``; here ``num_rounds`` is the run's total
  (``num-server-rounds``), not the number of rounds left.
- **Retries.** After a fit round it asks ``strategy.wants_retry(round)`` (a round with fewer valid
  updates than ``min-fit-clients`` under ``on-insufficient-clients=retry``) and, if so, runs the fit
  phase again with a new client sample before evaluating.
- **Named failures.** A client that raises (or whose message comes back as an error) reaches the
  strategy as a :class:`ClientFailure` carrying the client's node id, instead of an anonymous
  exception, so the logs say *which* client failed. It is still a ``BaseException``, as Flower's
  ``failures`` type says.

After each round it calls ``strategy.close_round(round)``, which writes the round's line if the
strategy's hooks have not (e.g. when no client could be sampled for evaluation).
"""

from __future__ import annotations

import concurrent.futures
import timeit
from logging import INFO
from typing import Any, Callable

from flwr.common import Code, EvaluateIns, EvaluateRes, FitIns, FitRes, Parameters, Scalar, log
from flwr.server import Server
from flwr.server.client_proxy import ClientProxy
from flwr.server.history import History


class ClientFailure(Exception):
    """A client's fit/evaluate raised or returned an error; ``cid`` names the client (node id)."""

    def __init__(self, cid: str, cause: BaseException | str) -> None:
        super().__init__(f"node {cid}: {cause!r}" if isinstance(cause, BaseException) else f"node {cid}: {cause}")
        self.cid = cid
        self.cause = cause


class FederationServer(Server):
    """``flwr.server.Server`` that resumes at the strategy's first round and retries short rounds."""

    def fit(self, num_rounds: int, timeout: float | None) -> tuple[History, float]:
        history = History()
        log(INFO, "[INIT]")
        # The strategy restores a checkpoint here (resume) and then knows its first round.
        self.parameters = self._get_initial_parameters(server_round=0, timeout=timeout)
        first_round = int(getattr(self.strategy, "first_round", 1))
        if first_round == 1:
            res = self.strategy.evaluate(0, parameters=self.parameters)
            if res is not None:
                history.add_loss_centralized(server_round=0, loss=res[0])
                history.add_metrics_centralized(server_round=0, metrics=res[1])
        else:
            log(INFO, "resuming at round %s of %s", first_round, num_rounds)
        start_time = timeit.default_timer()
        for current_round in range(first_round, num_rounds + 1):
            log(INFO, "")
            log(INFO, "[ROUND %s]", current_round)
            res_fit = self.fit_round(server_round=current_round, timeout=timeout)
            wants_retry: Callable[[int], bool] = getattr(self.strategy, "wants_retry", lambda _: False)
            while wants_retry(current_round):
                log(INFO, "[ROUND %s] retrying the fit phase with a new sample of clients", current_round)
                res_fit = self.fit_round(server_round=current_round, timeout=timeout)
            if res_fit is not None:
                parameters_prime, fit_metrics, _ = res_fit
                if parameters_prime:
                    self.parameters = parameters_prime
                history.add_metrics_distributed_fit(server_round=current_round, metrics=fit_metrics)
            res_cen = self.strategy.evaluate(current_round, parameters=self.parameters)
            if res_cen is not None:
                history.add_loss_centralized(server_round=current_round, loss=res_cen[0])
                history.add_metrics_centralized(server_round=current_round, metrics=res_cen[1])
            res_fed = self.evaluate_round(server_round=current_round, timeout=timeout)
            if res_fed is not None and res_fed[0] is not None:
                history.add_loss_distributed(server_round=current_round, loss=res_fed[0])
                history.add_metrics_distributed(server_round=current_round, metrics=res_fed[1])
            close_round = getattr(self.strategy, "close_round", None)
            if close_round is not None:
                close_round(current_round)
        return history, timeit.default_timer() - start_time

    def fit_round(
        self, server_round: int, timeout: float | None
    ) -> tuple[Parameters | None, dict[str, Scalar], Any] | None:
        return self._phase("fit", server_round, timeout)

    def evaluate_round(
        self, server_round: int, timeout: float | None
    ) -> tuple[float | None, dict[str, Scalar], Any] | None:
        return self._phase("evaluate", server_round, timeout)

    def _phase(self, phase: str, server_round: int, timeout: float | None) -> tuple[Any, Any, Any] | None:
        """``configure_<phase>`` -> the sampled clients -> ``aggregate_<phase>``; None without clients.

        Returns the aggregate (parameters or loss, metrics) and ``(results, failures)``, as Flower's
        ``fit_round``/``evaluate_round`` do.
        """
        instructions = getattr(self.strategy, f"configure_{phase}")(
            server_round=server_round, parameters=self.parameters, client_manager=self._client_manager
        )
        if not instructions:
            if phase == "fit":
                log(INFO, "configure_fit: no clients selected, cancel")
            return None
        log(INFO, "configure_%s: strategy sampled %s clients (out of %s)",
            phase, len(instructions), self._client_manager.num_available())
        results, failures = run_clients(instructions, phase, self.max_workers, timeout, server_round)
        log(INFO, "aggregate_%s: received %s results and %s failures", phase, len(results), len(failures))
        aggregate, metrics = getattr(self.strategy, f"aggregate_{phase}")(server_round, results, failures)
        return aggregate, metrics, (results, failures)


def run_clients(
    instructions: list[tuple[ClientProxy, FitIns | EvaluateIns]],
    method: str,
    max_workers: int | None,
    timeout: float | None,
    group_id: int,
) -> tuple[list[tuple[ClientProxy, Any]], list[Any]]:
    """Flower's ``fit_clients``/``evaluate_clients``, but each failure names its client.

    Results come back in completion order (the strategy sorts them before aggregating).
    """
    results: list[tuple[ClientProxy, FitRes | EvaluateRes]] = []
    failures: list[tuple[ClientProxy, FitRes | EvaluateRes] | BaseException] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max_workers) as executor:
        futures = {
            executor.submit(getattr(proxy, method), ins, timeout, group_id): proxy for proxy, ins in instructions
        }
        done, _ = concurrent.futures.wait(futures, timeout=None)  # timeouts: the transport's job
    for future in done:
        proxy = futures[future]
        error = future.exception()
        if error is not None:
            failures.append(ClientFailure(str(proxy.cid), error))
            continue
        res = future.result()
        if res.status.code == Code.OK:
            results.append((proxy, res))
        else:
            failures.append((proxy, res))
    return results, failures
