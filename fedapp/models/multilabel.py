"""The FedNCAlign-ML network (paper Fig. 2), read top to bottom:

    x (B, C_in, H, W)
      -> backbone                      feature map  (B, d, H', W')
      -> flatten                       tokens F     (B, H'W', d)
      -> LADM (Eq. 3)                  features H   (B, C, d), one h_c per class
      -> ETF classifier (Eq. 4-5)      logit_c = s * <h_c, w_c> + b_c,  w_c fixed simplex ETF column

Ablation switches (paper Tables 5-8):
- ``classifier="fc"`` with LADM: a learnable per-class linear (group-wise linear, Query2Label):
  logit_c = <h_c, v_c> + b_c;
- ``use_ladm=False``: global-average-pooled feature f (B, d); ``classifier="etf"`` gives
  logit_c = s * <f, w_c> (+ b_c); ``classifier="fc"`` is exactly :class:`~fedapp.models.nets.PooledLinearNet`
  (the FedAvg baseline), which :func:`build_multilabel_net` returns for that row;
- ``query_mode``: fixed ETF queries, or learnable queries initialised from the ETF or at random.

One simplex ETF (from ``etf_seed``) serves both as LADM queries and as classifier, as in the paper.
It is a non-persistent buffer: never in ``state_dict()``, rebuilt from the seed by every party.

The logit scale ``s`` and bias ``b`` are where the paper is silent (Eq. 4 reads logit_c = h_c^T w_c).
The authors' released code (``neural_collapse/etf_classifier.py``, github
CanPeng123/multi_label_fl_fednca) has a learnable scalar s initialised to 10 and a learnable
per-class bias b initialised to 0, both trained and averaged with the model:
``learnable_scale=True, logit_scale=10, bias=True``, which FedNCAlign-ML's client builds by default
(``fedncalign-formulation=authors``). The class defaults here (fixed s = 1, no bias) are this
project's earlier reading, used by ``fedncalign-formulation=mean-cosine``. Every class feature h_c
also has logits against all C prototypes, z_cj = s * <h_c, w_j> + b_j (:meth:`ETFClassifier.class_logits`),
which the authors' rejection loss reads; the BCE uses z_cc. Their ETF is the C x C simplex padded
with zeros to d (it spans the first C coordinates); here it is the same simplex rotated by a seeded
orthonormal U (:mod:`fedapp.models.etf`), equivalent up to a rotation of the feature space.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch
from torch import nn

from fedapp.models.etf import simplex_etf
from fedapp.models.ladm import LADM, QueryMode
from fedapp.models.nets import PooledLinearNet

ClassifierKind = Literal["etf", "fc"]
CLASSIFIER_KINDS: tuple[str, ...] = get_args(ClassifierKind)


class ETFClassifier(nn.Module):
    """Fixed simplex-ETF classifier (Eq. 4): logit_c = s * <h_c, w_c> (+ b_c with ``bias=True``).

    Accepts class-specific features ``(B, C, d)`` (logit c uses only h_c) or one pooled feature
    ``(B, d)`` (logit_c = s * <f, w_c> + b_c). ``etf`` is the ``(d, C)`` buffer, not in
    ``state_dict``; a learnable ``scale`` and the ``bias`` are parameters and travel.
    """

    def __init__(
        self, dim: int, num_classes: int, seed: int = 0, scale: float = 1.0, learnable_scale: bool = False,
        bias: bool = False,
    ) -> None:
        super().__init__()
        if not scale > 0.0:
            raise ValueError(f"the ETF classifier's logit scale must be > 0, got {scale}")
        self.dim = dim
        self.num_classes = num_classes
        self.register_buffer("etf", simplex_etf(num_classes, dim, seed), persistent=False)
        if learnable_scale:
            self.scale = nn.Parameter(torch.tensor(float(scale)))
        else:
            self.register_buffer("scale", torch.tensor(float(scale)), persistent=False)
        self.bias: nn.Parameter | None
        if bias:
            self.bias = nn.Parameter(torch.zeros(num_classes))
        else:
            self.register_parameter("bias", None)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() == 3 and features.shape[1:] == (self.num_classes, self.dim):
            logits = self.scale * (features * self.etf.T).sum(dim=-1)  # <h_c, w_c> per class
        elif features.dim() == 2 and features.shape[1] == self.dim:
            logits = self.scale * (features @ self.etf)
        else:
            self._refuse(features)
        return logits if self.bias is None else logits + self.bias

    def class_logits(self, features: torch.Tensor) -> torch.Tensor:
        """z_cj = s * <h_c, w_j> + b_j: every class feature ``(B, C, d)`` against every class -> ``(B, C, C)``."""
        if features.dim() != 3 or features.shape[1:] != (self.num_classes, self.dim):
            self._refuse(features)
        logits = self.scale * (features @ self.etf)
        return logits if self.bias is None else logits + self.bias

    def _refuse(self, features: torch.Tensor) -> None:
        raise ValueError(
            f"ETFClassifier expects (B, {self.num_classes}, {self.dim}) or (B, {self.dim}) features, "
            f"got {tuple(features.shape)}"
        )


class GroupLinear(nn.Module):
    """Per-class linear head on class-specific features: logit_c = <h_c, v_c> + b_c.

    ``weight`` is ``(C, d)`` and ``bias`` ``(C,)``, initialised like ``nn.Linear(d, 1)`` per class.
    """

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.dim = dim
        self.num_classes = num_classes
        bound = 1.0 / dim**0.5
        self.weight = nn.Parameter(torch.empty(num_classes, dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_classes).uniform_(-bound, bound))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 3 or features.shape[1:] != (self.num_classes, self.dim):
            raise ValueError(
                f"GroupLinear expects (B, {self.num_classes}, {self.dim}) features, got {tuple(features.shape)}"
            )
        return (features * self.weight).sum(dim=-1) + self.bias


class MultiLabelNet(nn.Module):
    """Backbone -> tokens -> LADM -> per-class features -> ETF (or group-linear) classifier.

    Args:
        backbone: maps images to a feature map ``(B, feature_dim, H', W')``.
        feature_dim: d, the backbone's output channels (>= num_classes - 1 for the ETF).
        num_classes: C.
        use_ladm: False pools the map to one feature (only with ``classifier="etf"``; the
            (no LADM, fc) row is :class:`PooledLinearNet`, see :func:`build_multilabel_net`).
        classifier: ``"etf"`` (fixed, Eq. 4) or ``"fc"`` (learnable group-wise linear).
        query_mode, num_heads, ladm_dropout, ladm_ffn_dim, ladm_residual_norm: see :class:`LADM`.
        etf_seed: seed of the one ETF used as queries and classifier.
        logit_scale, learnable_scale, classifier_bias: the ETF classifier's s and b (see module
            docstring).
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        num_classes: int,
        use_ladm: bool = True,
        classifier: ClassifierKind = "etf",
        query_mode: QueryMode = "etf",
        etf_seed: int = 0,
        num_heads: int = 4,
        ladm_dropout: float = 0.0,
        ladm_ffn_dim: int = 0,
        ladm_residual_norm: bool = False,
        logit_scale: float = 1.0,
        learnable_scale: bool = False,
        classifier_bias: bool = False,
    ) -> None:
        super().__init__()
        if classifier not in CLASSIFIER_KINDS:
            raise ValueError(f"classifier={classifier!r} is unknown; allowed: {', '.join(map(repr, CLASSIFIER_KINDS))}")
        if not use_ladm and classifier == "fc":
            raise ValueError(
                "use_ladm=False with classifier='fc' is the plain baseline: use PooledLinearNet "
                "(build_multilabel_net returns it for this combination)"
            )
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.use_ladm = use_ladm
        self.classifier_kind = classifier
        self.backbone = backbone
        self.ladm: LADM | None = None
        if use_ladm:
            self.ladm = LADM(
                feature_dim, num_classes, num_heads=num_heads, query_mode=query_mode, etf_seed=etf_seed,
                dropout=ladm_dropout, residual_norm=ladm_residual_norm, ffn_dim=ladm_ffn_dim,
            )
        self.classifier: ETFClassifier | GroupLinear
        if classifier == "etf":
            self.classifier = ETFClassifier(
                feature_dim, num_classes, etf_seed, logit_scale, learnable_scale, classifier_bias
            )
        else:
            self.classifier = GroupLinear(feature_dim, num_classes)

    @property
    def prototypes(self) -> torch.Tensor | None:
        """The fixed ETF ``(d, C)`` the losses align to, or None with the fc classifier."""
        return self.classifier.etf if isinstance(self.classifier, ETFClassifier) else None

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone feature map ``(B, d, H', W')`` flattened to tokens ``(B, H'W', d)``."""
        feature_map = self.backbone(x)
        if feature_map.dim() != 4 or feature_map.shape[1] != self.feature_dim:
            raise ValueError(
                f"the backbone must give a (B, {self.feature_dim}, H', W') map, got {tuple(feature_map.shape)}"
            )
        return feature_map.flatten(2).transpose(1, 2)

    def class_features(self, x: torch.Tensor) -> torch.Tensor:
        """``H`` ``(B, C, d)`` with LADM, the pooled feature ``(B, d)`` without."""
        tokens = self.tokens(x)
        if self.ladm is None:
            return tokens.mean(dim=1)
        return self.ladm(tokens)

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.class_features(x)
        return self.classifier(features), features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.class_features(x))


def build_multilabel_net(
    backbone: nn.Module,
    feature_dim: int,
    num_classes: int,
    use_ladm: bool = True,
    classifier: ClassifierKind = "etf",
    **options: Any,
) -> MultiLabelNet | PooledLinearNet:
    """The network of one ablation row: :class:`PooledLinearNet` for (no LADM, fc), else
    :class:`MultiLabelNet` with the given switches; ``options`` are :class:`MultiLabelNet`'s other
    keyword arguments (``query_mode``, ``etf_seed``, ``num_heads``, ...)."""
    if classifier not in CLASSIFIER_KINDS:
        raise ValueError(f"classifier={classifier!r} is unknown; allowed: {', '.join(map(repr, CLASSIFIER_KINDS))}")
    if not use_ladm and classifier == "fc":
        return PooledLinearNet(backbone, feature_dim, num_classes)
    return MultiLabelNet(backbone, feature_dim, num_classes, use_ladm=use_ladm, classifier=classifier, **options)
