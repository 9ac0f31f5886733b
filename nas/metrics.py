"""Classification metrics, computed on the host from labels and predicted probabilities."""
from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics as skm

# Metrics a search may optimise: fitness = 1 - metric.
FITNESS_METRICS = ('accuracy', 'balanced_accuracy', 'macro_f1', 'auc')


def classification_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
  """Accuracy, balanced accuracy, macro F1, macro one-vs-rest AUC, per-class rates, confusion.

  Args:
    labels: int (N,) true classes.
    probs: float (N, K) predicted class probabilities.
  """
  num_classes = probs.shape[1]
  classes = np.arange(num_classes)
  preds = probs.argmax(axis=1)
  confusion = skm.confusion_matrix(labels, preds, labels=classes)
  true_pos = np.diag(confusion)
  positives = confusion.sum(axis=1)
  negatives = confusion.sum() - positives
  false_pos = confusion.sum(axis=0) - true_pos
  with np.errstate(invalid='ignore', divide='ignore'):
    sensitivity = true_pos / positives
    specificity = (negatives - false_pos) / negatives
  return {
      'accuracy': float(skm.accuracy_score(labels, preds)),
      # Mean recall over the classes present, as sklearn's balanced_accuracy_score.
      'balanced_accuracy': float(np.nanmean(sensitivity)),
      'macro_f1': float(skm.f1_score(labels, preds, labels=classes, average='macro',
                                     zero_division=0)),
      'auc': _macro_auc(labels, probs),
      'sensitivity': _nan_to_none(sensitivity),
      'specificity': _nan_to_none(specificity),
      'confusion_matrix': confusion.tolist(),
      'num_examples': int(len(labels)),
      **calibration(labels, probs),
  }


def calibration(labels: np.ndarray, probs: np.ndarray, bins: int = 15) -> dict[str, Any]:
  """Expected calibration error and the reliability diagram's bins (equal-width confidence).

  ECE = sum over bins of |accuracy - mean confidence| weighted by the bin's share of examples.
  """
  confidence = probs.max(axis=1)
  correct = probs.argmax(axis=1) == labels
  which = np.minimum((confidence * bins).astype(int), bins - 1)
  count = np.bincount(which, minlength=bins)
  with np.errstate(invalid='ignore'):
    mean_confidence = np.bincount(which, confidence, bins) / count
    accuracy = np.bincount(which, correct, bins) / count
  gaps = np.nan_to_num(np.abs(accuracy - mean_confidence)) * count
  return {'ece': float(gaps.sum() / len(labels)),
          'calibration': {'confidence': _nan_to_none(mean_confidence),
                          'accuracy': _nan_to_none(accuracy), 'count': count.tolist()}}


def best_threshold_accuracy(labels: np.ndarray, scores: np.ndarray) -> float:
  """The highest accuracy of `scores >= t` over every threshold t, for binary labels.

  Chosen on these labels, it bounds what moving a classifier's threshold could give; it is
  never a result of that classifier.
  """
  fpr, tpr, _ = skm.roc_curve(labels, scores, drop_intermediate=False)
  positives = int(np.sum(labels == 1))
  return float(np.max(tpr * positives + (1 - fpr) * (len(labels) - positives)) / len(labels))


def shifted_class_shares(probs: np.ndarray, trained_shares: np.ndarray,
                         iterations: int = 1000) -> tuple[np.ndarray, np.ndarray]:
  """The classes' shares among unlabelled images, and the probabilities adjusted to them.

  EM of Saerens et al. 2002 (Neural Computation 14:21): it assumes only the class mix moved
  from the one the model was trained on (`trained_shares`), not what each class looks like.
  """
  shares, adjusted = trained_shares, probs
  for _ in range(iterations):
    adjusted = probs * (shares / trained_shares)
    adjusted /= adjusted.sum(axis=1, keepdims=True)
    shares = adjusted.mean(axis=0)
  return shares, adjusted


def _macro_auc(labels: np.ndarray, probs: np.ndarray) -> float:
  """Macro one-vs-rest AUC over the classes present in `labels`; NaN if fewer than two."""
  present = np.unique(labels)
  if len(present) < 2:
    return float('nan')
  if probs.shape[1] == 2:
    return float(skm.roc_auc_score(labels, probs[:, 1]))
  aucs = [skm.roc_auc_score(labels == k, probs[:, k]) for k in present]
  return float(np.mean(aucs))


def _nan_to_none(values: np.ndarray) -> list[float | None]:
  """JSON has no NaN: a class absent from the labels gets None."""
  return [None if np.isnan(v) else float(v) for v in values]
