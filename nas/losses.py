"""Segmentation losses: pure jax functions of logits and (possibly soft) target masks."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def soft_dice(probs: jax.Array, targets: jax.Array, smooth: float = 1.0) -> jax.Array:
  """Per image and channel, (2 sum(p t) + smooth) / (sum(p) + sum(t) + smooth); (B, C).

  `smooth` makes an empty target predicted empty score 1 and keeps the gradient finite.
  """
  axes = (1, 2)
  overlap = jnp.sum(probs * targets, axis=axes)
  total = jnp.sum(probs, axis=axes) + jnp.sum(targets, axis=axes)
  return (2.0 * overlap + smooth) / (total + smooth)


def dice_bce_loss(logits: jax.Array, targets: jax.Array, dice_weight: float | jax.Array = 1.0,
                  bce_weight: float | jax.Array = 1.0,
                  label_smoothing: float | jax.Array = 0.0) -> jax.Array:
  """bce_weight * BCE + dice_weight * (1 - soft Dice), averaged over the batch; a scalar.

  Args:
    logits: float (B, H, W, C), one sigmoid logit per pixel and foreground channel.
    targets: float (B, H, W, C) in [0, 1].
    dice_weight, bce_weight: the terms' weights.
    label_smoothing: a, pulling the BCE targets to t (1 - a) + a / 2; Dice keeps t.
  """
  logits = logits.astype(jnp.float32)
  targets = targets.astype(jnp.float32)
  smoothed = targets * (1.0 - label_smoothing) + 0.5 * label_smoothing
  bce = optax.sigmoid_binary_cross_entropy(logits, smoothed).mean()
  dice = soft_dice(jax.nn.sigmoid(logits), targets).mean()
  return bce_weight * bce + dice_weight * (1.0 - dice)
