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

from torch import nn

from clients.fedncalign_ml import FedNCAlignMLClient
from fedapp.algorithm import Algorithm
from fedapp.models.backbones import build_backbone
from fedapp.models.multilabel import build_multilabel_net
from fedapp.options import Option, require
from strategies.base import FederatedStrategy


class FedNCAlignMLStrategy(FederatedStrategy):
    """Example-weighted averaging of the trainable shared tensors; the fixed ETF stays put.

    Which tensors travel is decided by the model (``state_dict`` minus BN counters, see
    :func:`fedapp.params.shared_keys`): the ETF is a non-persistent buffer, so FedAvg's rule over the
    shared keys is exactly the paper's aggregation. A non-multi-label dataset is refused when the
    server builds the model (``task="multilabel"`` in :data:`ALGORITHM`).
    """


LADM_HEADS = 4  # fixed by the paper ("4-head cross-attention")
AUTHORS_LOGIT_SCALE = 10.0  # the initial s of the authors' ETFClassifier (init_scale=10.0)
# The defaults fedncalign-formulation sets for its loss keys (the declared defaults are the authors').
FORMULATIONS = {
    # The authors' released code (github CanPeng123/multi_label_fl_fednca, run_bash/fednca.sh).
    "authors": {"lambda-rejection": 0.01, "tau": 0.3, "temperature": 0.07},
    # This project's earlier reading: mean reductions, cosine-hinge rejection, no classifier bias.
    "mean-cosine": {"lambda-rejection": 1.0, "tau": 0.5, "temperature": 0.2},
}


def etf_ladm_model(config, bundle) -> nn.Module:
    """Backbone -> LADM class features -> fixed simplex-ETF classifier (or the ablations' variants)."""
    backbone = build_backbone(config.backbone, bundle.input_shape[0], config.pretrained_path)
    authors = config.fedncalign_formulation == "authors"
    return build_multilabel_net(
        backbone, backbone.out_dim, bundle.num_classes, use_ladm=config.use_ladm,
        classifier=config.classifier, query_mode=config.ladm_queries, etf_seed=config.seed,
        num_heads=LADM_HEADS, logit_scale=AUTHORS_LOGIT_SCALE if authors else 1.0,
        learnable_scale=authors, classifier_bias=authors,
    )


def check_losses(config) -> None:
    """tau's range depends on the formulation; the regularizers need LADM features and the ETF."""
    if config.fedncalign_formulation == "authors":
        require(0 <= config.tau < 1, "tau", config.tau,
                "a margin on a sigmoid probability in [0, 1) (fedncalign-formulation=authors)")
    else:
        require(-1 <= config.tau < 1, "tau", config.tau,
                "a cosine threshold in [-1, 1) (fedncalign-formulation=mean-cosine)")
    if config.algorithm != ALGORITHM.name:
        return
    for key, weight in (("lambda-rejection", config.lambda_rejection),
                        ("lambda-contrastive", config.lambda_contrastive)):
        require(
            weight == 0 or (config.classifier == "etf" and config.use_ladm), key, weight,
            f"0 when classifier={config.classifier!r} and use-ladm={str(config.use_ladm).lower()} (the "
            "rejection/contrastive losses need LADM class features and the ETF prototypes)",
        )
    require(config.use_ladm or config.ladm_queries == "etf", "ladm-queries", config.ladm_queries,
            "etf (the default) when use-ladm=false (there are no LADM queries)")


ALGORITHM = Algorithm(
    name="fedncalign-ml", display_name="FedNCAlign-ML", task="multilabel", strategy=FedNCAlignMLStrategy,
    client=FedNCAlignMLClient, model=etf_ladm_model, check=check_losses,
    options=(
        Option("fedncalign-formulation", "authors", "FedNCAlign-ML: authors (released code) or mean-cosine (earlier)",
               "authors or mean-cosine", lambda v: v in FORMULATIONS, sets_defaults=FORMULATIONS),
        Option("lambda-rejection", 0.01, "FedNCAlign-ML: weight of the rejection loss",
               "a number >= 0 (0: no rejection loss)", lambda v: v >= 0),
        Option("lambda-contrastive", 1.0, "FedNCAlign-ML: weight of the contrastive loss",
               "a number >= 0 (0: no contrastive loss)", lambda v: v >= 0),
        Option("tau", 0.3, "FedNCAlign-ML: rejection threshold (authors: margin on a sigmoid; mean-cosine: a cosine)"),
        Option("temperature", 0.07, "FedNCAlign-ML: temperature T of the contrastive loss", "a number > 0",
               lambda v: v > 0),
        Option("fedncalign-warmup", False, "FedNCAlign-ML: ramp both loss weights up over the rounds"),
        Option("use-ladm", True, "FedNCAlign-ML: LADM class-wise features (false: pooled feature)"),
        Option("classifier", "etf", "FedNCAlign-ML: fixed simplex-ETF classifier or learnable linear",
               "etf or fc", lambda v: v in ("etf", "fc")),
        Option("ladm-queries", "etf", "FedNCAlign-ML: LADM queries etf (fixed), etf-learnable, random-learnable",
               "etf, etf-learnable or random-learnable", lambda v: v in ("etf", "etf-learnable", "random-learnable")),
    ),
)
