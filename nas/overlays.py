"""Predicted against true masks: a segmenter's best and worst test images, as one figure.

The segmenters' counterpart of the Grad-CAM figure (nas.explain): where a classifier's
heat map shows what it looks at, a mask shows what it found. Images are ranked by their own
Dice (nas.seg_metrics, so an image scores as it counts in the mean).
"""
from __future__ import annotations

import os

import matplotlib
matplotlib.use('Agg')
from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

import datasets
from models.saved import SavedModel
from nas import seg_metrics

# Mask colours, as the figure's title names them.
_TRUTH = (0.1, 0.85, 0.2)
_PREDICTION = (0.95, 0.15, 0.1)


def per_image(masks: np.ndarray, probs: np.ndarray) -> list[dict[str, float]]:
  """seg_metrics.segmentation_metrics of each image on its own."""
  return [seg_metrics.segmentation_metrics(m[None], p[None]) for m, p in zip(masks, probs)]


def pick_examples(dice: np.ndarray, per_kind: int = 3) -> list[int]:
  """Indices of the `per_kind` highest-Dice images, then the `per_kind` lowest, worst last.

  Ties keep the order of the split; with fewer than 2 * per_kind images, all of them.
  """
  order = list(np.argsort(-dice, kind='stable'))
  if len(order) <= 2 * per_kind:
    return order
  return order[:per_kind] + order[-per_kind:]


def _show(ax, image: np.ndarray) -> None:
  ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap='gray', vmin=0, vmax=255)


def _tint(ax, mask: np.ndarray, color: tuple[float, float, float]) -> None:
  rgba = np.zeros(mask.shape + (4,))
  rgba[mask] = (*color, 0.45)
  ax.imshow(rgba)
  if mask.any() and not mask.all():
    ax.contour(mask, levels=[0.5], colors=[color], linewidths=0.8)


def overlay_figure(model: SavedModel, split: datasets.Split, path: str,
                   per_kind: int = 3) -> str:
  """Saves the image, true mask and predicted mask of the best and worst images of `split`.

  Columns: the `per_kind` images the model segments best, then the `per_kind` worst, each
  titled with its Dice and IoU; rows: the image, the true mask (green) and the predicted
  mask (red, probability >= 0.5) over it.
  """
  probs = model.predict(split.images, 64)
  scores = per_image(split.masks, probs)
  chosen = pick_examples(np.array([s['dice'] for s in scores]), per_kind)
  best = min(per_kind, len(chosen) - len(chosen) // 2)
  fig, axes = plt.subplots(3, len(chosen), figsize=(2.1 * len(chosen), 6.6), squeeze=False)
  for column, i in enumerate(chosen):
    kind = 'best' if column < best else 'worst'
    image = split.images[i]
    for row, (mask, color) in enumerate(((None, None), (split.masks[i][..., 0] > 0, _TRUTH),
                                         (probs[i][..., 0] >= 0.5, _PREDICTION))):
      ax = axes[row, column]
      ax.axis('off')
      _show(ax, image)
      if mask is not None:
        _tint(ax, mask, color)
    axes[0, column].set_title(
        f'{kind}: Dice {scores[i]["dice"]:.2f}\nIoU {scores[i]["iou"]:.2f}  {split.ids[i][:14]}',
        fontsize=7, parse_math=False)  # ids are file names: '$' is no math
  for row, name in enumerate(('image', 'true mask', 'predicted')):
    axes[row, 0].text(-0.06, 0.5, name, transform=axes[row, 0].transAxes, rotation=90,
                      ha='right', va='center', fontsize=8)
  fig.suptitle(f'The winner on {len(split)} test images: best {best} and worst '
               f'{len(chosen) - best} by Dice (green: true, red: predicted)', fontsize=9)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
