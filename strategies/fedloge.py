"""FedLoGe (Xiao et al., ICLR 2024, "FedLoGe: Joint Local and Generic Federated Learning under
Long-tailed Data"): SSE-C, aggregation of the backbone and the auxiliary head, GA-FR.

Before round 1 the server builds the Static Sparse ETF Classifier W (Eq. 3-5; ``sparsity`` = beta,
``sse-c-norm`` = gamma; :func:`fedapp.models.sse_c.build_sse_c`) from the run seed and logs its
construction report (also written to ``<run dir>/fixed_classifier.json``). W never travels: every
client rebuilds it from the same seed and reports its checksum with each update; an update whose
checksum differs from the server's is rejected (it was trained against another classifier).

Aggregation of the shared model w = {theta, psi} (clients keep phi_k):

    theta_{t+1}  = sum_k (n_k / n) theta_k                                   (FedAvg)
    psi_{t+1,c}  = sum_k a_{k,c} psi_{k,c}

with a_{k,c} = n_k / n (``head-aggregation=fedavg``, the default: Algorithm 1 line 6 aggregates
theta and psi alike, the paper's Appendix states that nothing beyond FedAvg's information is sent,
and it is the authors' code's default switch) or, with ``head-aggregation=classwise`` (the authors'
optional ``class_wise`` switch), a_{k,c} ∝ (n_k / n) * p_k[c] / sum_k' p_k'[c] normalised per
class, i.e. n_{k,c} / n_c, from the class counts the clients then send
(:func:`fedapp.models.feature_realignment.classwise_head_weights`).

Global model for evaluation (GM), GA-FR (Eq. 6): z = h @ psi'^T with psi'_c = psi_c / ||psi_c||_2
(``ga-fr=false``: raw psi; ``global-head=sse-c``: z = h @ W, the authors' code's default). The psi
that travels stays un-normalised: GA-FR is Algorithm 1's stage 2, applied to the model the server
evaluates. Every round also records the other variants from the same features (``*_gm_psi_ga_fr``,
``*_gm_psi``, ``*_gm_fixed`` on validation and test; ``test_pm_la_fr``, ``test_pm_local_head``,
``test_pm_global`` from the clients), so one run gives the GA-FR/LA-FR rows of the paper's Table 3.
"""

from __future__ import annotations

import json
from logging import INFO, WARNING

import numpy as np
import torch
import torch.nn.functional as F
from flwr.common import EvaluateRes, FitRes, Scalar, bytes_to_ndarray, log
from flwr.server.client_proxy import ClientProxy
from torch import nn

from clients.fedloge import FedLoGeClient
from fedapp.algorithm import Algorithm
from fedapp.checkpoint import CheckpointError
from fedapp.metrics import singlelabel_metrics
from fedapp.models.backbones import build_backbone
from fedapp.models.feature_realignment import (
    aggregate_head,
    classwise_head_weights,
    ga_fr,
)
from fedapp.models.fedloge_net import (
    CHECKSUM_METRIC,
    CLASS_COUNTS_METRIC,
    GLOBAL_HEAD,
    LOCAL_HEAD,
    FedLoGeNet,
    LinearHead,
    decode_counts,
    fixed_classifier,
    global_classifier,
)
from fedapp.options import Option
from fedapp.params import set_arrays, shared_keys
from fedapp.pfl import pooled_features
from strategies.base import FederatedStrategy, ServerSetup
from strategies.bookkeeping import client_mean

# Federated-evaluation metrics of the clients -> metrics.jsonl names (means over clients).
PM_VARIANTS = {"accuracy_la_fr": "test_pm_la_fr", "accuracy_local_head": "test_pm_local_head",
               "accuracy_global": "test_pm_global"}


class FedLoGeStrategy(FederatedStrategy):
    """FedAvg of theta and psi (or class-wise psi), GA-FR global model, SSE-C checksum check."""

    def __init__(self, setup: ServerSetup) -> None:
        super().__init__(setup)
        cfg = self.config
        net = setup.model
        if not isinstance(net, FedLoGeNet):
            raise TypeError(f"strategy {ALGORITHM.name!r} needs the FedLoGe client's model, got {type(net).__name__}")
        num_classes, dim = net.fixed_classifier.shape[1], net.fixed_classifier.shape[0]
        # Built once per process (cached): the server model above already holds this W.
        self.fixed = fixed_classifier(cfg.fedloge_classifier, num_classes, dim, cfg.sparsity, cfg.sse_c_norm, cfg.seed)
        if self.fixed.checksum != net.fixed_checksum:
            raise RuntimeError("the server model's fixed classifier differs from the strategy's")
        self.num_classes = num_classes
        self.psi_index = setup.keys.index(f"{GLOBAL_HEAD}weight")
        report = self.fixed.report
        log(INFO, "FedLoGe: %s (%d classes x dim %d, sparsity=%s, sse-c-norm=%s, seed=%s) built in %.2f s, "
            "%s steps: norm mean %.6f var %.3g, angle mean %.3f deg min %.3f deg, checksum %s",
            cfg.fedloge_classifier, num_classes, dim, cfg.sparsity, cfg.sse_c_norm, cfg.seed, report["seconds"],
            report["steps"], report["norm_mean"], report["norm_var"], report["mean_angle_deg"],
            report["min_angle_deg"], self.fixed.checksum[:16])
        (self.recorder.run_dir / "fixed_classifier.json").write_text(json.dumps({
            "kind": cfg.fedloge_classifier, "classes": num_classes, "dim": dim, "sparsity": cfg.sparsity,
            "sse_c_norm": cfg.sse_c_norm, "seed": cfg.seed, "checksum": self.fixed.checksum, "report": report,
        }, indent=2))

    # --------------------------------------------------------------- updates
    def validate_results(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]]
    ) -> tuple[list[tuple[ClientProxy, FitRes]], int]:
        """The base checks, then the fixed-classifier checksum and (class-wise) the class counts."""
        accepted, rejected = super().validate_results(server_round, results)
        kept = []
        for proxy, res in accepted:
            reason = self.fedloge_reason(res.metrics)
            if reason is None:
                kept.append((proxy, res))
            else:
                log(WARNING, "round %s: rejected the update of %s: %s", server_round,
                    self.client_name(str(proxy.cid)), reason)
        return kept, rejected + len(accepted) - len(kept)

    def fedloge_reason(self, metrics: dict[str, Scalar]) -> str | None:
        """Why a FedLoGe update cannot be aggregated, or None."""
        checksum = metrics.get(CHECKSUM_METRIC)
        if checksum != self.fixed.checksum:
            if checksum is None:
                return f"it sent no {CHECKSUM_METRIC!r} fit metric (not a FedLoGe client?)"
            return (f"its fixed classifier has checksum {str(checksum)[:16]}..., the server's "
                    f"{self.fixed.checksum[:16]}... (fedloge-classifier={self.config.fedloge_classifier}, "
                    f"seed={self.config.seed}, sparsity={self.config.sparsity}, sse-c-norm={self.config.sse_c_norm}): "
                    "it trained against another classifier (other settings, software or hardware)")
        if self.config.head_aggregation == "classwise":
            try:
                decode_counts(metrics.get(CLASS_COUNTS_METRIC), self.num_classes)
            except ValueError as error:
                return f"head-aggregation=classwise needs its class counts: {error}"
        return None

    def aggregate_updates(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]]
    ) -> list[np.ndarray]:
        """FedAvg of everything, then psi's rows replaced by the class-wise average (if configured)."""
        arrays = super().aggregate_updates(server_round, results)
        if self.config.head_aggregation == "classwise":
            counts = np.stack([decode_counts(res.metrics[CLASS_COUNTS_METRIC], self.num_classes) for _, res in results])
            sizes = np.array([res.num_examples for _, res in results], dtype=np.float64)
            # Only psi: no need to deserialise each client's whole model a second time.
            heads = [bytes_to_ndarray(res.parameters.tensors[self.psi_index]) for _, res in results]
            arrays[self.psi_index], _ = aggregate_head(heads, None, classwise_head_weights(counts, sizes))
        return arrays

    # ------------------------------------------------------------ evaluation
    def global_model(self, arrays: list[np.ndarray]) -> nn.Module:
        """theta with the configured global classifier (GA-FR psi by default)."""
        set_arrays(self.setup.model, self.setup.keys, arrays)
        return LinearHead(self.setup.model, global_classifier(self.setup.model, self.config.global_head,
                                                              self.config.ga_fr))

    def server_metrics(self, model: nn.Module) -> dict[str, float]:
        """GM, many/medium/few of ``model`` and the accuracy of each head variant, on validation and test.

        The backbone runs once per set; each head is a matmul on the pooled features.
        """
        if not isinstance(model, LinearHead):
            return super().server_metrics(model)
        net, cfg, data = model.net, self.config, self.setup.data
        psi = net.global_head.weight.detach()
        variants = {"gm_psi_ga_fr": ga_fr(psi), "gm_psi": psi, "gm_fixed": net.fixed_classifier.T}
        metrics: dict[str, float] = {}
        for prefix, dataset in self.evaluation_sets().items():
            features, labels = pooled_features(net, dataset, self.setup.device, cfg.eval_batch_size)
            truth = labels.cpu().numpy()
            main = _predict(features, model.weight)
            values = singlelabel_metrics(truth, main, data.bundle.class_counts(),
                                         cfg.many_shot_min or None, cfg.few_shot_max or None,
                                         rule="cumulative" if cfg.shot_split == "counts" else cfg.shot_split)
            metrics.update({f"{prefix}_{k}": v for k, v in values.items()})
            for name, head in variants.items():
                metrics[f"{prefix}_{name}"] = float(np.mean(_predict(features, head) == truth))
        return metrics

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        """PM (base class) plus the means of the clients' PM variants."""
        for key, name in PM_VARIANTS.items():
            values = [float(res.metrics[key]) for _, res in results if key in res.metrics]
            if values:
                self.recorder.add(server_round, **{name: client_mean(values)})
        return super().aggregate_evaluate(server_round, results, failures)

    # ------------------------------------------------------------ checkpoint
    def strategy_state(self) -> dict[str, np.ndarray]:
        """W itself and its checksum: a resumed run must train against the very same classifier."""
        return {
            "fixed_classifier": self.fixed.matrix.numpy(),
            "fixed_classifier_checksum": np.frombuffer(self.fixed.checksum.encode(), dtype=np.uint8).copy(),
        }

    def load_strategy_state(self, state: dict[str, np.ndarray]) -> None:
        if "fixed_classifier_checksum" not in state:
            raise CheckpointError("the checkpoint has no FedLoGe fixed-classifier checksum (not a FedLoGe run?)")
        saved = bytes(np.asarray(state["fixed_classifier_checksum"], dtype=np.uint8)).decode()
        if saved != self.fixed.checksum:
            raise CheckpointError(
                f"the checkpoint's fixed classifier (checksum {saved[:16]}...) differs from the one rebuilt now "
                f"({self.fixed.checksum[:16]}...): the run was trained against another SSE-C/ETF; resume it "
                "with the same fedloge-classifier, seed, sparsity and sse-c-norm on the same software"
            )


def _predict(features: torch.Tensor, head: torch.Tensor) -> np.ndarray:
    return F.linear(features, head.to(features.device, features.dtype)).argmax(dim=1).cpu().numpy()


HEAD_SEED_OFFSET = 4099  # psi/phi init seed = seed + 4099: distinct from the SSE-C's and the data's draws


def fedloge_model(config, bundle) -> nn.Module:
    """Backbone, the fixed SSE-C (or dense ETF) classifier from ``seed``, auxiliary head psi, local head phi."""
    backbone = build_backbone(config.backbone, bundle.input_shape[0], config.pretrained_path)
    fixed = fixed_classifier(
        config.fedloge_classifier, bundle.num_classes, backbone.out_dim, config.sparsity, config.sse_c_norm,
        config.seed,
    )
    return FedLoGeNet(backbone, backbone.out_dim, fixed, head_seed=config.seed + HEAD_SEED_OFFSET)


def shared_without_local_head(model: nn.Module) -> list[str]:
    """Everything but phi_k, the local head that stays on the client."""
    return shared_keys(model, exclude_prefixes=[LOCAL_HEAD])


ALGORITHM = Algorithm(
    name="fedloge", display_name="FedLoGe", task="singlelabel", strategy=FedLoGeStrategy, client=FedLoGeClient,
    model=fedloge_model, travelling_keys=shared_without_local_head,
    options=(
        Option("fedloge-classifier", "sse-c", "FedLoGe: fixed classifier sse-c (sparse, Eq. 3-5) or etf (dense)",
               "sse-c (sparse ETF, FedLoGe Eq. 3-5) or etf (dense simplex ETF)", lambda v: v in ("sse-c", "etf")),
        Option("sparsity", 0.6, "FedLoGe: beta, fraction of zero entries of every SSE-C class vector",
               "a number in [0, 1) (fraction of zero entries)", lambda v: 0 <= v < 1),
        Option("sse-c-norm", 1.0, "FedLoGe: gamma, the norm of every class vector of SSE-C",
               "a number > 0 (class-vector norm gamma)", lambda v: v > 0),
        Option("head-aggregation", "fedavg", "FedLoGe: aggregate psi by fedavg (paper) or classwise",
               "classwise or fedavg", lambda v: v in ("classwise", "fedavg")),
        Option("ga-fr", True, "FedLoGe: global model uses psi_c / ||psi_c|| (Eq. 6); false: raw psi"),
        Option("global-head", "psi", "FedLoGe: global model's classifier psi (paper) or sse-c",
               "psi or sse-c", lambda v: v in ("psi", "sse-c")),
        Option("la-fr", True, "FedLoGe: personal head phi'_kc = psi_c/||psi_c|| * ||phi_kc|| (Eq. 7)"),
        Option("la-fr-finetune-epochs", 0, "FedLoGe: epochs fine-tuning the personal head before the last PM",
               "an integer >= 0 (0: no fine-tuning)", lambda v: v >= 0),
        Option("fedloge-head-lr", 0.03, "FedLoGe: SGD step size of psi and phi_k", "a number > 0", lambda v: v > 0),
        Option("fedloge-head-momentum", 0.5, "FedLoGe: SGD momentum of psi and phi_k", "a number in [0, 1)",
               lambda v: 0 <= v < 1),
        Option("fedloge-head-weight-decay", 0.0, "FedLoGe: weight decay of psi and phi_k", "a number >= 0",
               lambda v: v >= 0),
    ),
)
