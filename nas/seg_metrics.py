"""Binary segmentation metrics, computed on the host per image and averaged over images.

Per image, with P the predicted foreground (probability >= threshold) and T the true one:
Dice = 2|P & T| / (|P| + |T|), IoU = |P & T| / |P | T|, precision = |P & T| / |P|,
recall = |P & T| / |T|. A ratio 0/0 is 1 when P and T are both empty (nothing to find,
nothing found) and 0 otherwise, so an image scores perfectly only if it is right.
HD95 is the 95th percentile of the boundary-to-boundary distances in both directions
pooled (as medpy's hd95), in pixels; 0 when both are empty and the image diagonal, the
largest distance possible, when only one is.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

# Metrics a segmentation search may optimise: fitness = 1 - metric.
SEG_FITNESS_METRICS = ('dice', 'iou', 'precision', 'recall')


def segmentation_metrics(masks: np.ndarray, probs: np.ndarray,
                         threshold: float = 0.5) -> dict[str, Any]:
  """Dice, IoU, precision, recall and HD95, each the mean over images.

  Args:
    masks: (N, H, W, 1) true masks, 0 or 1.
    probs: float (N, H, W, 1) predicted foreground probabilities.
    threshold: probabilities at or above it are foreground.
  """
  if masks.shape != probs.shape or masks.shape[-1] != 1:
    raise ValueError(f'binary masks and probabilities must both be (N, H, W, 1), got '
                     f'{masks.shape} and {probs.shape}')
  truth = masks[..., 0].astype(bool)
  pred = probs[..., 0] >= threshold
  tp = np.sum(truth & pred, axis=(1, 2))
  fp = np.sum(~truth & pred, axis=(1, 2))
  fn = np.sum(truth & ~pred, axis=(1, 2))
  both_empty = (tp + fp + fn) == 0
  return {
      'dice': _mean_ratio(2 * tp, 2 * tp + fp + fn, both_empty),
      'iou': _mean_ratio(tp, tp + fp + fn, both_empty),
      'precision': _mean_ratio(tp, tp + fp, both_empty),
      'recall': _mean_ratio(tp, tp + fn, both_empty),
      'hd95': float(np.mean([hd95(t, p) for t, p in zip(truth, pred)])),
      'num_examples': len(masks),
  }


def _mean_ratio(numerator: np.ndarray, denominator: np.ndarray,
                both_empty: np.ndarray) -> float:
  with np.errstate(invalid='ignore', divide='ignore'):
    ratio = numerator / denominator
  return float(np.mean(np.where(denominator == 0, both_empty.astype(float), ratio)))


def hd95(truth: np.ndarray, pred: np.ndarray) -> float:
  """95th percentile Hausdorff distance in pixels between two boolean (H, W) masks."""
  if not truth.any() and not pred.any():
    return 0.0
  if not truth.any() or not pred.any():
    return float(np.hypot(*truth.shape))
  truth_edge, pred_edge = _boundary(truth), _boundary(pred)
  # Distance from every pixel to the nearest boundary pixel of the other mask.
  to_truth = ndimage.distance_transform_edt(~truth_edge)
  to_pred = ndimage.distance_transform_edt(~pred_edge)
  return float(np.percentile(np.concatenate([to_truth[pred_edge], to_pred[truth_edge]]), 95))


def _boundary(mask: np.ndarray) -> np.ndarray:
  """Foreground pixels with a 4-neighbour outside the mask (or outside the image)."""
  return mask & ~ndimage.binary_erosion(mask, ndimage.generate_binary_structure(2, 1))
