"""FedNCAlign-ML (paper: "Neural Collapse-Inspired Multi-Label Federated Learning under
Label-Distribution Skew", ``papers/fedncalign-ml.txt``, Algorithm 1).

The method lives in the model and the local objective (:mod:`clients.fedncalign_ml`); the server
follows the standard protocol (Algorithm 1: local training, aggregation, broadcast) with FedAvg
over the *trainable shared* tensors only:

    theta_{t+1} = sum_k (n_k / n) * theta_{t+1}^k,   theta = (backbone, LADM W^Q, W^K, W^V, W^O
                                                              [, ETF logit scale s and bias b]
                                                              [, learnable queries | group-linear head])

The simplex ETF W (LADM queries and classifier) is fixed and rebuilt from ``seed`` on the server
and on every client (a non-persistent buffer), so it never travels; with fixed queries the upload
is the backbone plus LADM's 4 * d * (d + 1) projection values (d = 64: 16,640 floats), plus, under
``fedncalign-formulation=authors``, the classifier's learnable s and b (1 + C floats), which the
authors' code trains and averages with the rest of the model.
"""

from __future__ import annotations

from strategies.base import FederatedStrategy


class FedNCAlignMLStrategy(FederatedStrategy):
    """Example-weighted averaging of the trainable shared tensors; the fixed ETF stays put.

    Which tensors travel is decided by the model (``state_dict`` minus BN counters, see
    :func:`fedapp.params.shared_keys`): the ETF is a non-persistent buffer, so FedAvg's rule over the
    shared keys is exactly the paper's aggregation. A non-multi-label dataset is refused when the
    server builds the model (:meth:`clients.fedncalign_ml.FedNCAlignMLClient.build_model`).
    """
