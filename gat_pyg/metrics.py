r"""Classification metrics computed from log-probabilities, in plain PyTorch.

Each metric maps ``(log_probs, labels)`` to a float in :math:`[0, 1]`, higher is better:

- ``'accuracy'``: the fraction of nodes whose most probable class is their label;
- ``'roc_auc'``: the area under the ROC curve of the probability of class 1, for binary
  labels (:func:`roc_auc`).
"""
from typing import Callable, Dict

import torch
from torch import Tensor

__all__ = ['METRICS', 'METRIC_NAMES', 'accuracy', 'metric_key', 'roc_auc', 'score']


def accuracy(log_probs: Tensor, labels: Tensor) -> float:
    """The fraction of rows of ``log_probs`` :math:`(N, C)` whose largest entry is at the
    column ``labels`` :math:`(N)`."""
    return float((log_probs.argmax(-1) == labels).float().mean())


def roc_auc(log_probs: Tensor, labels: Tensor) -> float:
    r"""The area under the ROC curve of a binary classifier, with ties counted half.

    .. math::
        \mathrm{AUC} = \frac{1}{n_+ n_-} \sum_{i: y_i = 1} \sum_{j: y_j = 0}
            \Big( [s_i > s_j] + \tfrac{1}{2} [s_i = s_j] \Big)
        = \frac{\sum_{i: y_i = 1} r_i - n_+ (n_+ + 1) / 2}{n_+ n_-},

    where :math:`s_i` is the score of example :math:`i` (the log-probability of class 1,
    which ranks like the probability) and :math:`r_i` its rank among all scores, tied
    scores sharing their average rank (the Mann-Whitney statistic; what
    ``sklearn.metrics.roc_auc_score`` computes). :math:`O(N \log N)`, in float64.

    Args:
        log_probs (torch.Tensor): Log-probabilities :math:`(N, 2)`, or scores :math:`(N)`
            (higher means class 1).
        labels (torch.Tensor): Labels in :math:`\{0, 1\}`, shape :math:`(N)`.

    Raises:
        ValueError: If ``labels`` is not binary or lacks one of the two classes.
    """
    scores = log_probs[:, 1] if log_probs.dim() == 2 else log_probs
    positive = labels.view(-1) == 1
    if not bool(((labels == 0) | positive).all()):
        raise ValueError('ROC-AUC needs binary labels in {0, 1}')
    num_pos = int(positive.sum())
    num_neg = positive.numel() - num_pos
    if num_pos == 0 or num_neg == 0:
        raise ValueError(f'ROC-AUC needs both classes (got {num_pos} positive and '
                         f'{num_neg} negative examples)')
    _, group, counts = torch.unique(scores.double(), return_inverse=True, return_counts=True)
    # Ascending groups of equal scores; a group of k ties ending at 1-based position c
    # holds ranks c - k + 1 ... c, whose average is c - (k - 1) / 2.
    ends = counts.cumsum(0).double()
    average_rank = ends - (counts.double() - 1.0) / 2.0
    rank_sum = float(average_rank[group][positive].sum())
    return (rank_sum - num_pos * (num_pos + 1) / 2.0) / (num_pos * num_neg)


METRICS: Dict[str, Callable[[Tensor, Tensor], float]] = {
    'accuracy': accuracy,
    'roc_auc': roc_auc,
}


# How each metric is written in messages.
METRIC_NAMES: Dict[str, str] = {'accuracy': 'accuracy', 'roc_auc': 'ROC-AUC'}


def metric_key(metric: str) -> str:
    """The suffix of ``metric`` in result keys: ``'acc'`` for accuracy (``test_acc``), else
    the metric's name (``test_roc_auc``)."""
    return 'acc' if metric == 'accuracy' else metric


def score(metric: str, log_probs: Tensor, labels: Tensor) -> float:
    """The value of ``metric`` (a key of :data:`METRICS`) for ``log_probs`` :math:`(N, C)`
    against ``labels`` :math:`(N)`."""
    if metric not in METRICS:
        raise ValueError(f"Unknown metric '{metric}' (choose from {', '.join(METRICS)})")
    return METRICS[metric](log_probs, labels)
