"""Grad-CAM heat maps: which pixels a trained network's decision rests on.

Grad-CAM (Selvaraju et al. 2017) weighs each channel of the last feature map by the mean
gradient of a class logit with respect to it, keeps the positive part of the weighted sum,
and upsamples it to the input. `models.network` exposes that feature map as the
`features` intermediate and perturbation.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import matplotlib
matplotlib.use('Agg')
from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

import datasets
from models import compiler
from models import network
from models.saved import SavedModel


def grad_cam(model: SavedModel, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
  """Heat maps in [0, 1], float32 (N, H, W) at the input size, for `classes` (N,)."""
  return np.asarray(_jitted_grad_cam(model.module, model.variables, jnp.asarray(images),
                                     jnp.asarray(classes)))


def _grad_cam(module, variables, images: jax.Array, classes: jax.Array) -> jax.Array:
  x = network.preprocess(images)
  _, state = module.apply(variables, x, train=False, mutable=['intermediates'])
  features = state['intermediates'][network.FEATURES][0]

  def chosen_logits(perturbation):
    logits = module.apply({**variables, 'perturbations': {network.FEATURES: perturbation}},
                          x, train=False)
    return jnp.sum(logits[jnp.arange(len(classes)), classes])

  gradients = jax.grad(chosen_logits)(jnp.zeros_like(features))
  weights = gradients.mean(axis=(1, 2), keepdims=True)
  cam = jax.nn.relu((weights * features).sum(axis=-1))
  cam = cam / jnp.maximum(cam.max(axis=(1, 2), keepdims=True), 1e-12)
  return jax.image.resize(cam, (len(cam), *images.shape[1:3]), 'bilinear').clip(0, 1)


# One compilation instead of dozens of op-by-op ones (seconds on a CPU), optimised as the
# one-off it is.
_jitted_grad_cam = compiler.jit_on_first_call(_grad_cam, 'init', static_argnums=0)


def pick_examples(labels: np.ndarray, predictions: np.ndarray, num_classes: int,
                  per_kind: int = 2) -> list[int]:
  """Indices of up to `per_kind` correct and `per_kind` misclassified images per class."""
  picked = []
  for k in range(num_classes):
    of_class = labels == k
    for kind in (predictions == labels, predictions != labels):
      picked += list(np.flatnonzero(of_class & kind)[:per_kind])
  return picked


def grad_cam_figure(model: SavedModel, split: datasets.Split, path: str,
                    per_kind: int = 2) -> str:
  """Saves a grid of Grad-CAM overlays (rows: true class; correct, then misclassified)."""
  probs = model.predict(split.images, 256)
  predictions = probs.argmax(axis=1)
  chosen = pick_examples(split.labels, predictions, len(model.class_names), per_kind)
  heat = grad_cam(model, split.images[chosen], predictions[chosen])
  rows, cols = len(model.class_names), 2 * per_kind
  fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
  for ax in axes.ravel():
    ax.axis('off')
  slots = {}
  for n, i in enumerate(chosen):
    label, correct = split.labels[i], predictions[i] == split.labels[i]
    column = slots.get((label, correct), 0) + (0 if correct else per_kind)
    slots[(label, correct)] = slots.get((label, correct), 0) + 1
    ax = axes[label, column]
    ax.imshow(split.images[i][..., 0] if split.images.shape[-1] == 1 else split.images[i],
              cmap='gray')
    ax.imshow(heat[n], cmap='jet', alpha=0.4, vmin=0, vmax=1)
    verdict = 'ok' if correct else 'wrong'
    ax.set_title(f'{verdict}: {model.class_names[label]}\n'
                 f'-> {model.class_names[predictions[i]]} ({probs[i].max():.2f})', fontsize=7,
                 parse_math=False)  # class names are folder names: '$' is no math
  fig.suptitle('Grad-CAM of the winner on test images (left: correct, right: misclassified)',
               fontsize=9)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
