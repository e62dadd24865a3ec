"""The run configuration: one frozen dataclass parsed from Flower's flat run config.

Precedence, lowest first: the dataclass defaults (equal to ``[tool.flwr.app.config]`` in
pyproject.toml), then the preset named by ``preset`` (``fedapp/presets/<name>.yaml``), then every key
whose run-config value differs from its default (what ``flwr run . -c "key=value"`` changed).
Consequence worth knowing: under a preset, a key overridden back to its *default* value keeps the
preset's value.

Every key is validated before anything trains; an error names the key, the value and what is
allowed.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

PRESET_DIR = Path(__file__).resolve().parent / "presets"

ALGORITHMS = (
    "fedavg", "fedncalign-ml", "fedloge", "centralized", "fedprox", "fedcurv", "scaffold",
    "spherefed", "fedlgt", "fedbn", "fedper", "fedrep", "ditto", "fedrod", "fedbabu", "fedetf",
    "ratio-loss",
)
DATASETS = (
    "ml-digits", "lt-digits", "ml-cifar10", "cifar10-lt", "cifar100-lt", "ml-dermamnist",
    "voc2012", "chestx-ray14", "imagenet-lt", "image-folder", "multilabel-csv",
)
CHOICES: dict[str, tuple[str, ...]] = {
    "algorithm": ALGORITHMS,
    "dataset": DATASETS,
    "partition": ("iid", "dirichlet"),
    "dirichlet-mode": ("per-sample", "cut"),
    "shot-split": ("cumulative", "thirds", "counts"),
    "augment": ("auto", "none", "crop-flip", "crop"),
    "backbone": ("cnn", "resnet18", "resnet18-cifar"),
    "optimizer": ("adamw", "sgd"),
}


# FedNCAlign-ML's formulation decides the defaults of its loss keys (the dataclass defaults are the
# authors'). Precedence: dataclass defaults < the formulation's < preset < keys changed in the run
# config; like a preset's, a formulation's value is kept when the key is set back to its default.
FORMULATION_KEY = "fedncalign-formulation"
FORMULATION_DEFAULTS: dict[str, dict[str, Any]] = {
    # The authors' released code (github CanPeng123/multi_label_fl_fednca, run_bash/fednca.sh).
    "authors": {"lambda-rejection": 0.01, "tau": 0.3, "temperature": 0.07},
    # This project's earlier reading: mean reductions, cosine-hinge rejection, no classifier bias.
    "mean-cosine": {"lambda-rejection": 1.0, "tau": 0.5, "temperature": 0.2},
}


class ConfigError(ValueError):
    """A run-config key has a value that is not allowed."""


@dataclass(frozen=True)
class RunConfig:
    """All run-config keys (kebab-case in Flower, snake_case here). Defaults = the embedded default run."""

    # What to run
    algorithm: str = "fedavg"
    dataset: str = "ml-digits"
    preset: str = ""
    seed: int = 0
    # Federation and local training
    num_server_rounds: int = 20
    local_epochs: int = 3
    batch_size: int = 32
    optimizer: str = "adamw"
    lr: float = 3e-3
    weight_decay: float = 0.01
    momentum: float = 0.9
    fraction_fit: float = 1.0
    # Data and partitions
    partition: str = "dirichlet"
    alpha: float = 0.5
    dirichlet_mode: str = "per-sample"  # single-label Dirichlet: each sample drawn to a client (FedLoGe's code) or "cut"
    class_presence_ratio: float = 1.0
    imbalance_factor: float = 10.0
    min_partition_size: int = 10
    val_fraction: float = 0.1
    local_test_size: int = 0  # each client's PM test set: 0 = n_kc / n * n_test per class (FedLoGe's code); N = N samples
    shot_split: str = "cumulative"  # many/medium/few: 75%/95% cumulative-count cuts (FedLoGe's code), "thirds" or "counts"
    many_shot_min: int = 0
    few_shot_max: int = 0
    augment: str = "auto"  # training augmentation: auto (cifar*-lt, imagenet-lt: crop-flip; else none), none, crop-flip, crop
    data_root: str = ""
    # Model
    backbone: str = "cnn"
    pretrained_path: str = ""
    # Outputs and devices
    output_dir: str = ""
    device: str = ""
    eval_batch_size: int = 512
    tensorboard: bool = True  # TensorBoard event files in the run directory (written by the server only)
    image_size: int = 32  # image-folder / multilabel-csv: images are resized to image-size x image-size
    # Training speed on GPUs: data workers, mixed precision, layout, compilation, determinism
    num_workers: int = 0  # DataLoader worker processes per client (node config num-workers overrides it)
    amp: str = "off"  # mixed-precision training: "off" (fp32), "bf16" (autocast), "fp16" (autocast + grad scaler)
    channels_last: bool = False  # model and images in channels-last (NHWC) memory format
    compile: bool = False  # torch.compile the model's forward (in place; first round pays the compile time)
    deterministic: bool = False  # deterministic kernels and cuDNN flags (GPU runs repeat bit for bit; slower)
    evaluate_test: bool = True  # false: no test-split evaluation at all (validation only; tuning runs)
    # SphereFed / FedLGT (issue 7): multi-label baselines of the FedNCAlign-ML tables
    spherefed_scale: float = 16.0  # SphereFed: s in logit_c = s * cos(z, w_c) (fixed orthonormal classifier)
    spherefed_ridge: float = 0.01  # SphereFed: lambda in W* = (sum_k Z_k^T Z_k + lambda I)^-1 sum_k Z_k^T Y_k
    spherefed_calibrate_every: int = 1  # SphereFed: calibrate every N rounds and after the last; 0 = last only
    fedlgt_layers: int = 1  # FedLGT: encoder layers over image + label tokens (C-Tran/FedLGT: 3; 1 for CPU cost)
    fedlgt_max_known_fraction: float = 0.75  # FedLGT: most labels revealed as known states in training; 0 = none
    fedlgt_uncertainty_margin: float = 0.02  # FedLGT CA-MLE: labels with |p_global - 0.5| <= margin made unknown
    fedlgt_label_embeddings: str = "text"  # FedLGT: stored text embeddings ("text") or seeded random ("random")
    # FedProx / SCAFFOLD / FedCurv (issue 7): baselines of the FedNCAlign-ML tables
    mu: float = 0.01  # FedProx: weight of the proximal term (mu/2)||w - w_global||^2
    server_lr: float = 1.0  # SCAFFOLD: global step size eta_g of x <- x + eta_g * mean(y_k - x)
    scaffold_local_lr: float = 0.3  # SCAFFOLD: local SGD step size eta_l (replaces optimizer/lr)
    scaffold_momentum: float = 0.9  # SCAFFOLD: heavy-ball momentum of the local SGD (0 = the paper's plain SGD)
    fedcurv_lambda: float = 1.0  # FedCurv: weight of sum_j sum_i F_ji (w_i - w_ji)^2
    # Long runs (issue 10): checkpoint/resume, partial participation, failing clients
    checkpoint_every: int = 5  # write <run dir>/checkpoint.npz every N rounds (and after the last); 0 = off
    resume: str = ""  # run directory to continue from its checkpoint.npz (appends to its metrics.jsonl)
    state_dir: str = ""  # per-node folder for the clients' private state (node config state-dir overrides)
    fraction_evaluate: float = 1.0  # fraction of clients evaluating their personalized model (PM, single-label)
    min_fit_clients: int = 1  # fewest valid updates a round aggregates; also the smallest fit sample
    min_available_clients: int = 1  # clients that must be connected before a round samples
    on_insufficient_clients: str = "skip"  # a round below min-fit-clients: skip | retry | fail
    round_retries: int = 2  # re-samples of a round below min-fit-clients (on-insufficient-clients=retry)
    max_update_norm: float = 0.0  # reject updates with ||w_k - w_global||_2 above this; 0 = no bound
    fault_injection: str = ""  # TESTING AID ONLY (fedapp/faults.py): "raise:<partition>:<round>,nan:..."
    # FedBN / FedPer / FedRep / FedBABU / Ditto / FedRoD / FedETF / Ratio Loss (issue 8)
    fedrep_head_epochs: int = 5  # FedRep: epochs on the local head (body frozen) before the body epochs
    finetune_epochs: int = 5  # FedBABU, FedETF: local fine-tuning epochs before personalized evaluation
    fedbabu_finetune_body: bool = True  # FedBABU: fine-tune body + head (true) or the head only (false)
    ditto_lambda: float = 0.1  # Ditto: weight of (lambda/2)||v_k - w_global||^2 in the personal objective
    fedetf_scale_init: float = 1.0  # FedETF: initial value of the learnable temperature of the ETF logits
    ratio_loss_alpha: float = 1.0  # Ratio Loss: class weight w_c = alpha + beta * Ra_c
    ratio_loss_beta: float = 0.1  # Ratio Loss: see ratio-loss-alpha
    ratio_loss_aux_per_class: int = 8  # Ratio Loss: server's auxiliary samples per class (validation split)
    # FedNCAlign-ML (issue 4): L = BCE + lambda-rejection * L_rej + lambda-contrastive * L_con (Eq. 9)
    # fedncalign-formulation also sets the defaults of lambda-rejection, tau, temperature (FORMULATION_DEFAULTS)
    fedncalign_formulation: str = "authors"  # FedNCAlign-ML: "authors" (released code) or "mean-cosine" (earlier)
    lambda_rejection: float = 0.01  # FedNCAlign-ML: weight of the rejection loss (authors' script: 0.01)
    lambda_contrastive: float = 1.0  # FedNCAlign-ML: weight of the contrastive loss (paper: 1)
    tau: float = 0.3  # FedNCAlign-ML: rejection threshold (authors: margin on a sigmoid; mean-cosine: a cosine)
    temperature: float = 0.07  # FedNCAlign-ML: temperature T of the contrastive loss (authors' code: 0.07)
    fedncalign_warmup: bool = False  # FedNCAlign-ML: ramp both loss weights up over the rounds (authors' option)
    use_ladm: bool = True  # FedNCAlign-ML: LADM class-wise features (false: global-average-pooled feature)
    classifier: str = "etf"  # FedNCAlign-ML: "etf" fixed simplex-ETF classifier or "fc" learnable linear
    ladm_queries: str = "etf"  # FedNCAlign-ML: LADM queries "etf" (fixed), "etf-learnable", "random-learnable"
    # FedLoGe (issue 5): SSE-C trains the backbone; GA-FR (server) and LA-FR (clients) realign the heads
    fedloge_classifier: str = "sse-c"  # FedLoGe: fixed classifier "sse-c" (sparse, Eq. 3-5) or "etf" (dense; Table 3)
    sparsity: float = 0.6  # FedLoGe: beta, fraction of zero entries of every SSE-C class vector
    sse_c_norm: float = 1.0  # FedLoGe: gamma, the norm of every class vector of SSE-C (and of the "etf" ablation)
    head_aggregation: str = "fedavg"  # FedLoGe: aggregate psi by "fedavg" (paper, authors' default) or "classwise"
    ga_fr: bool = True  # FedLoGe: global model uses psi_c / ||psi_c|| (Eq. 6); false: raw psi
    global_head: str = "psi"  # FedLoGe: global model's classifier "psi" (paper) or "sse-c" (the fixed one)
    la_fr: bool = True  # FedLoGe: personal head phi'_kc = psi_c/||psi_c|| * ||phi_kc|| (Eq. 7); false: raw phi_k
    la_fr_finetune_epochs: int = 0  # FedLoGe: epochs fine-tuning the personal head before the last round's PM
    fedloge_head_lr: float = 0.03  # FedLoGe: SGD step size of psi and phi_k (the authors' code)
    fedloge_head_momentum: float = 0.5  # FedLoGe: SGD momentum of psi and phi_k (the authors' code)
    fedloge_head_weight_decay: float = 0.0  # FedLoGe: weight decay of psi and phi_k (the authors' code: none)

    # ----------------------------------------------------------------- parsing
    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> "RunConfig":
        """Parse Flower's flat run config (kebab-case keys), applying the preset it names."""
        defaults = cls.default_values()
        unknown = sorted(set(run_config) - set(defaults))
        if unknown:
            raise ConfigError(
                f"unknown run-config key(s) {unknown}; allowed keys: {sorted(defaults)}"
            )
        explicit = {k: v for k, v in run_config.items() if k not in defaults or v != defaults[k]}
        preset_name = str(run_config.get("preset", "") or "")
        preset = load_preset(preset_name) if preset_name else {}
        form = explicit.get(FORMULATION_KEY, preset.get(FORMULATION_KEY, defaults[FORMULATION_KEY]))
        values = dict(defaults)
        values.update(FORMULATION_DEFAULTS.get(form, {}))  # an unknown form fails validation below
        values.update(preset)
        values.update(explicit)
        return cls.from_kebab(values)

    @classmethod
    def from_kebab(cls, values: Mapping[str, Any]) -> "RunConfig":
        """Build and validate from a complete or partial kebab-case mapping.

        A missing key takes its default; the keys in ``FORMULATION_DEFAULTS`` take the default of
        the mapping's ``fedncalign-formulation``.
        """
        form = values.get(FORMULATION_KEY, cls.default_values()[FORMULATION_KEY])
        values = {**FORMULATION_DEFAULTS.get(form, {}), **values}
        kwargs = {}
        by_key = {f.name.replace("_", "-"): f for f in fields(cls)}
        for key, value in values.items():
            if key not in by_key:
                raise ConfigError(f"unknown run-config key {key!r}; allowed keys: {sorted(by_key)}")
            kwargs[by_key[key].name] = _coerce(key, value, by_key[key].type)
        config = cls(**kwargs)
        config.validate()
        return config

    @classmethod
    def default_values(cls) -> dict[str, Any]:
        """The defaults as a kebab-case mapping (the content of pyproject's run config)."""
        return {f.name.replace("_", "-"): f.default for f in fields(cls)}

    def to_kebab(self) -> dict[str, Any]:
        """The config as the kebab-case mapping Flower and the YAML files use."""
        return {k.replace("_", "-"): v for k, v in dataclasses.asdict(self).items()}

    def replace(self, **changes: Any) -> "RunConfig":
        """A validated copy with some fields changed (snake_case names)."""
        config = dataclasses.replace(self, **changes)
        config.validate()
        return config

    # -------------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise ConfigError naming the first key whose value is not allowed."""
        for key, allowed in CHOICES.items():
            value = getattr(self, key.replace("-", "_"))
            if value not in allowed:
                raise ConfigError(f"{key}={value!r} is not allowed; allowed: {', '.join(allowed)}")
        _check(0 <= self.seed < 2**32, "seed", self.seed, "an integer in [0, 2**32) (numpy's seed range)")
        _check(self.num_server_rounds >= 1, "num-server-rounds", self.num_server_rounds, "an integer >= 1")
        _check(self.local_epochs >= 1, "local-epochs", self.local_epochs, "an integer >= 1")
        _check(self.batch_size >= 1, "batch-size", self.batch_size, "an integer >= 1")
        _check(self.eval_batch_size >= 1, "eval-batch-size", self.eval_batch_size, "an integer >= 1")
        _check(self.image_size >= 8, "image-size", self.image_size, "an integer >= 8 (pixels per side)")
        # SphereFed / FedLGT (issue 7)
        _check(self.spherefed_scale > 0, "spherefed-scale", self.spherefed_scale, "a number > 0")
        _check(self.spherefed_ridge >= 0, "spherefed-ridge", self.spherefed_ridge, "a number >= 0 (> 0 keeps the system solvable)")
        _check(
            self.spherefed_calibrate_every >= 0, "spherefed-calibrate-every", self.spherefed_calibrate_every,
            "an integer >= 0 (0: calibrate only after the last round)",
        )
        _check(self.fedlgt_layers >= 1, "fedlgt-layers", self.fedlgt_layers, "an integer >= 1")
        _check(
            0 <= self.fedlgt_max_known_fraction < 1, "fedlgt-max-known-fraction", self.fedlgt_max_known_fraction,
            "a number in [0, 1) (0: no label mask training)",
        )
        _check(
            0 <= self.fedlgt_uncertainty_margin <= 0.5, "fedlgt-uncertainty-margin", self.fedlgt_uncertainty_margin,
            "a number in [0, 0.5]",
        )
        _check(
            self.fedlgt_label_embeddings in ("text", "random"), "fedlgt-label-embeddings",
            self.fedlgt_label_embeddings, "text or random",
        )
        # FedProx / SCAFFOLD / FedCurv (issue 7)
        _check(self.mu >= 0, "mu", self.mu, "a number >= 0 (0 makes FedProx FedAvg)")
        _check(self.server_lr > 0, "server-lr", self.server_lr, "a number > 0 (1 is the paper's default)")
        _check(self.scaffold_local_lr > 0, "scaffold-local-lr", self.scaffold_local_lr, "a number > 0")
        _check(0 <= self.scaffold_momentum < 1, "scaffold-momentum", self.scaffold_momentum, "a number in [0, 1)")
        _check(self.fedcurv_lambda >= 0, "fedcurv-lambda", self.fedcurv_lambda, "a number >= 0 (0 makes FedCurv FedAvg)")
        # FedBN / FedPer / FedRep / FedBABU / Ditto / FedRoD / FedETF / Ratio Loss (issue 8)
        _check(self.fedrep_head_epochs >= 1, "fedrep-head-epochs", self.fedrep_head_epochs, "an integer >= 1")
        _check(self.finetune_epochs >= 0, "finetune-epochs", self.finetune_epochs, "an integer >= 0 (0: no fine-tuning)")
        _check(self.ditto_lambda >= 0, "ditto-lambda", self.ditto_lambda, "a number >= 0 (0: purely local personal models)")
        _check(self.fedetf_scale_init > 0, "fedetf-scale-init", self.fedetf_scale_init, "a number > 0")
        _check(self.ratio_loss_alpha >= 0, "ratio-loss-alpha", self.ratio_loss_alpha, "a number >= 0")
        _check(self.ratio_loss_beta >= 0, "ratio-loss-beta", self.ratio_loss_beta, "a number >= 0")
        _check(
            self.ratio_loss_alpha + self.ratio_loss_beta > 0, "ratio-loss-beta", self.ratio_loss_beta,
            "a number > 0 when ratio-loss-alpha is 0 (the class weights must be positive)",
        )
        _check(self.ratio_loss_aux_per_class >= 1, "ratio-loss-aux-per-class", self.ratio_loss_aux_per_class, "an integer >= 1")
        # FedNCAlign-ML (issue 4)
        _check(self.lambda_rejection >= 0, "lambda-rejection", self.lambda_rejection, "a number >= 0 (0: no rejection loss)")
        _check(
            self.lambda_contrastive >= 0, "lambda-contrastive", self.lambda_contrastive,
            "a number >= 0 (0: no contrastive loss)",
        )
        _check(
            self.fedncalign_formulation in FORMULATION_DEFAULTS, FORMULATION_KEY, self.fedncalign_formulation,
            " or ".join(FORMULATION_DEFAULTS),
        )
        if self.fedncalign_formulation == "authors":
            _check(0 <= self.tau < 1, "tau", self.tau, "a margin on a sigmoid probability in [0, 1) "
                   "(fedncalign-formulation=authors)")
        else:
            _check(-1 <= self.tau < 1, "tau", self.tau,
                   "a cosine threshold in [-1, 1) (fedncalign-formulation=mean-cosine)")
        _check(self.temperature > 0, "temperature", self.temperature, "a number > 0")
        _check(self.classifier in ("etf", "fc"), "classifier", self.classifier, "etf or fc")
        _check(
            self.ladm_queries in ("etf", "etf-learnable", "random-learnable"), "ladm-queries", self.ladm_queries,
            "etf, etf-learnable or random-learnable",
        )
        if self.algorithm == "fedncalign-ml":
            # The regularizers compare each class feature h_c with the fixed ETF prototypes.
            for key, weight in (("lambda-rejection", self.lambda_rejection),
                                ("lambda-contrastive", self.lambda_contrastive)):
                _check(
                    weight == 0 or (self.classifier == "etf" and self.use_ladm), key, weight,
                    f"0 when classifier={self.classifier!r} and use-ladm={str(self.use_ladm).lower()} (the "
                    "rejection/contrastive losses need LADM class features and the ETF prototypes)",
                )
            _check(
                self.use_ladm or self.ladm_queries == "etf", "ladm-queries", self.ladm_queries,
                "etf (the default) when use-ladm=false (there are no LADM queries)",
            )
        # FedLoGe (issue 5)
        _check(
            self.fedloge_classifier in ("sse-c", "etf"), "fedloge-classifier", self.fedloge_classifier,
            "sse-c (sparse ETF, FedLoGe Eq. 3-5) or etf (dense simplex ETF)",
        )
        _check(0 <= self.sparsity < 1, "sparsity", self.sparsity, "a number in [0, 1) (fraction of zero entries)")
        _check(self.sse_c_norm > 0, "sse-c-norm", self.sse_c_norm, "a number > 0 (class-vector norm gamma)")
        _check(
            self.head_aggregation in ("classwise", "fedavg"), "head-aggregation", self.head_aggregation,
            "classwise or fedavg",
        )
        _check(self.global_head in ("psi", "sse-c"), "global-head", self.global_head, "psi or sse-c")
        _check(
            self.la_fr_finetune_epochs >= 0, "la-fr-finetune-epochs", self.la_fr_finetune_epochs,
            "an integer >= 0 (0: no fine-tuning)",
        )
        _check(self.fedloge_head_lr > 0, "fedloge-head-lr", self.fedloge_head_lr, "a number > 0")
        _check(
            0 <= self.fedloge_head_momentum < 1, "fedloge-head-momentum", self.fedloge_head_momentum, "a number in [0, 1)"
        )
        _check(
            self.fedloge_head_weight_decay >= 0, "fedloge-head-weight-decay", self.fedloge_head_weight_decay,
            "a number >= 0",
        )
        _check(self.lr > 0, "lr", self.lr, "a number > 0")
        _check(self.weight_decay >= 0, "weight-decay", self.weight_decay, "a number >= 0")
        _check(0 <= self.momentum < 1, "momentum", self.momentum, "a number in [0, 1)")
        _check(0 < self.fraction_fit <= 1, "fraction-fit", self.fraction_fit, "a number in (0, 1]")
        _check(self.alpha > 0, "alpha", self.alpha, "a number > 0 (Dirichlet concentration)")
        _check(
            0 < self.class_presence_ratio <= 1, "class-presence-ratio", self.class_presence_ratio,
            "a number in (0, 1] (fraction of all classes present on each client)",
        )
        _check(self.imbalance_factor >= 1, "imbalance-factor", self.imbalance_factor, "a number >= 1")
        _check(self.min_partition_size >= 1, "min-partition-size", self.min_partition_size, "an integer >= 1")
        _check(0 <= self.val_fraction < 1, "val-fraction", self.val_fraction, "a number in [0, 1)")
        _check(
            self.local_test_size >= 0, "local-test-size", self.local_test_size,
            "an integer >= 0 (0: n_kc / n * n_test per class, FedLoGe's sizing; N: N samples per client)",
        )
        _check(self.many_shot_min >= 0, "many-shot-min", self.many_shot_min, "an integer >= 0 (used by shot-split=counts)")
        _check(self.few_shot_max >= 0, "few-shot-max", self.few_shot_max, "an integer >= 0 (used by shot-split=counts)")
        _check(
            (self.many_shot_min == 0) == (self.few_shot_max == 0), "few-shot-max", self.few_shot_max,
            "set together with many-shot-min (both 0 unless shot-split=counts)",
        )
        _check(
            (self.shot_split == "counts") == (self.many_shot_min > 0 or self.few_shot_max > 0), "shot-split",
            self.shot_split,
            "counts exactly when many-shot-min and few-shot-max are set (> 0); cumulative or thirds with both 0",
        )
        _check(
            re.fullmatch(r"|cpu|cuda(:[0-9]+)?", self.device) is not None,
            "device", self.device, "'' (the first CUDA device, else the CPU), 'cpu', 'cuda' or 'cuda:N'",
        )
        _check(self.num_workers >= 0, "num-workers", self.num_workers, "an integer >= 0 (0: read in the training process)")
        _check(self.amp in ("off", "bf16", "fp16"), "amp", self.amp, "off, bf16 or fp16")
        # Long runs (issue 10)
        _check(self.checkpoint_every >= 0, "checkpoint-every", self.checkpoint_every, "an integer >= 0 (0 = off)")
        _check(0 <= self.fraction_evaluate <= 1, "fraction-evaluate", self.fraction_evaluate, "a number in [0, 1]")
        _check(self.min_fit_clients >= 1, "min-fit-clients", self.min_fit_clients, "an integer >= 1")
        _check(
            self.min_available_clients >= 1, "min-available-clients", self.min_available_clients, "an integer >= 1"
        )
        _check(
            self.on_insufficient_clients in ("skip", "retry", "fail"), "on-insufficient-clients",
            self.on_insufficient_clients, "skip, retry or fail",
        )
        _check(self.round_retries >= 0, "round-retries", self.round_retries, "an integer >= 0")
        _check(self.max_update_norm >= 0, "max-update-norm", self.max_update_norm, "a number >= 0 (0 = no bound)")
        from fedapp.faults import parse_faults

        try:
            parse_faults(self.fault_injection)
        except ValueError as error:
            raise ConfigError(f"fault-injection={self.fault_injection!r} is not allowed: {error}") from None


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed; allowed: {allowed}")


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Convert a run-config value to the field's type (Flower gives str/int/float/bool)."""
    kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{key}={value!r} is not allowed; allowed: true or false")
    if kind == "int":
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        ):
            raise ConfigError(f"{key}={value!r} is not allowed; allowed: an integer")
        return int(value)
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{key}={value!r} is not allowed; allowed: a finite number")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"{key}={value!r} is not allowed; allowed: a string")
    return value


def available_presets() -> list[str]:
    """Names of the YAML presets shipped in ``fedapp/presets``."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str) -> dict[str, Any]:
    """The kebab-case mapping of preset ``name``; unknown names list the available ones."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"preset={name!r} does not exist; available: {', '.join(available_presets())}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"preset={name!r}: {path} is not valid YAML ({' '.join(str(error).split())})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"preset {path} must be a mapping of run-config keys to values")
    if "preset" in values:
        raise ConfigError(f"preset {path} must not name another preset")
    unknown = sorted(set(values) - set(RunConfig.default_values()))
    if unknown:
        raise ConfigError(f"preset {path} has unknown key(s) {unknown}")
    return values


# Keys that only some algorithms read (the rest apply to every run). A sweep that finds such a key
# changed in an old run of another algorithm may keep that run: the key never touched it.
ALGORITHM_KEYS: dict[str, tuple[str, ...]] = {
    "spherefed": ("spherefed-scale", "spherefed-ridge", "spherefed-calibrate-every"),
    "fedlgt": ("fedlgt-layers", "fedlgt-max-known-fraction", "fedlgt-uncertainty-margin",
               "fedlgt-label-embeddings"),
    "fedprox": ("mu",),
    "scaffold": ("server-lr", "scaffold-local-lr", "scaffold-momentum"),
    "fedcurv": ("fedcurv-lambda",),
    "fedrep": ("fedrep-head-epochs",),
    "fedbabu": ("finetune-epochs", "fedbabu-finetune-body"),
    "ditto": ("ditto-lambda",),
    "fedetf": ("finetune-epochs", "fedetf-scale-init"),
    "ratio-loss": ("ratio-loss-alpha", "ratio-loss-beta", "ratio-loss-aux-per-class"),
    "fedncalign-ml": ("fedncalign-formulation", "lambda-rejection", "lambda-contrastive", "tau", "temperature",
                      "fedncalign-warmup", "use-ladm", "classifier", "ladm-queries"),
    "fedloge": ("fedloge-classifier", "sparsity", "sse-c-norm", "head-aggregation", "ga-fr", "global-head",
                "la-fr", "la-fr-finetune-epochs", "fedloge-head-lr", "fedloge-head-momentum",
                "fedloge-head-weight-decay"),
}


def keys_read_by(algorithm: str) -> set[str]:
    """Every run-config key that ``algorithm`` reads: the common keys plus its own."""
    foreign = {key for name, keys in ALGORITHM_KEYS.items() if name != algorithm for key in keys}
    own = set(ALGORITHM_KEYS.get(algorithm, ()))
    return set(RunConfig.default_values()) - (foreign - own)
