"""Evaluation metrics of both papers, as pure functions over numpy arrays (numpy + scikit-learn only).

Multi-label (FedNCAlign-ML, :mod:`fedapp.metrics.multilabel`): macro/micro ROC-AUC on the sigmoid
scores and macro/micro F1 of the predictions ``score >= threshold`` (threshold 0.5 by default).

Single-label long-tailed (FedLoGe, :mod:`fedapp.metrics.singlelabel`): top-1 accuracy (GM when
computed for the global model on the balanced global test set), the accuracy on the
many/medium/few-shot class groups, and PM, the mean over clients of each client's local test
accuracy.

Every metric value returned is a Python ``float``: a fraction in [0, 1], or NaN where the docstring
says the metric is undefined. Inputs are validated up front; each misuse raises one ``ValueError``
that names the argument, says what was received and what is allowed.
"""

from __future__ import annotations

from fedapp.metrics.multilabel import multilabel_metrics, per_class_auc
from fedapp.metrics.singlelabel import (
    CUMULATIVE_CUTS,
    SHOT_GROUP_NAMES,
    SHOT_RULES,
    accuracy,
    cumulative_shot_groups,
    personalized_mean,
    shot_groups,
    singlelabel_metrics,
)

__all__ = [
    "CUMULATIVE_CUTS",
    "SHOT_GROUP_NAMES",
    "SHOT_RULES",
    "accuracy",
    "cumulative_shot_groups",
    "multilabel_metrics",
    "per_class_auc",
    "personalized_mean",
    "shot_groups",
    "singlelabel_metrics",
]
