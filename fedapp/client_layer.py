"""A Client that wraps another: the base of the layers ``fedapp.client_app.client_fn`` composes.

Each layer (:class:`fedapp.faults.FaultInjectingClient`, :class:`fedapp.node_state.NodeStateClient`)
overrides the messages it acts on and passes the others to the client inside it.
"""

from __future__ import annotations

from flwr.client import Client
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    GetParametersIns,
    GetParametersRes,
    GetPropertiesIns,
    GetPropertiesRes,
)


class ClientLayer(Client):
    """Passes every message to ``inner``."""

    def __init__(self, inner: Client) -> None:
        self.inner = inner

    def get_properties(self, ins: GetPropertiesIns) -> GetPropertiesRes:
        return self.inner.get_properties(ins)

    def get_parameters(self, ins: GetParametersIns) -> GetParametersRes:
        return self.inner.get_parameters(ins)

    def fit(self, ins: FitIns) -> FitRes:
        return self.inner.fit(ins)

    def evaluate(self, ins: EvaluateIns) -> EvaluateRes:
        return self.inner.evaluate(ins)
