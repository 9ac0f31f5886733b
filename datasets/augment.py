"""On-device augmentation for grey or colour medical images, for the jitted train step.

Flips, a small affine warp (rotation, scale, translation; bilinear sampling,
edges extended) and brightness/contrast jitter, with parameters drawn per image.
`strength` scales every maximum (and the flip probability) so that a search can
tune it as one traced number; strength 0 returns the images unchanged.

For segmentation, `augment_with_masks` moves each mask with its image (flips and
the same warp, sampled nearest so it stays binary); brightness and contrast
touch only the image.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Maxima at strength 1. Static: hashable, so it can be a jit static argument."""
  flip_lr: bool = True
  flip_ud: bool = False  # off by default: anatomy is rarely upside-down
  max_rotate_deg: float = 10.0
  max_scale: float = 0.1  # zoom factor in [1 - s, 1 + s]
  max_translate: float = 0.1  # shift, as a fraction of the image side
  max_brightness: float = 0.1  # added to [0, 1] intensities
  max_contrast: float = 0.1  # contrast factor in [1 - c, 1 + c], about the image mean


def augment(key: jax.Array, images: jax.Array, strength: jax.Array | float,
            config: AugmentConfig = AugmentConfig()) -> jax.Array:
  """Augments float32 images (B, H, W, C) in [0, 1]; deterministic given `key`."""
  keys = jax.random.split(key, images.shape[0])
  one = functools.partial(_augment_one, strength=jnp.asarray(strength, jnp.float32),
                          config=config)
  return jax.vmap(one)(keys, images)


def augment_with_masks(key: jax.Array, images: jax.Array, masks: jax.Array,
                       strength: jax.Array | float, config: AugmentConfig = AugmentConfig()
                       ) -> tuple[jax.Array, jax.Array]:
  """Augments images as `augment` (the same images for the same key) and moves masks
  (B, H, W, 1) of any dtype with them; returns the masks in their own dtype."""
  keys = jax.random.split(key, images.shape[0])
  one = functools.partial(_augment_one, strength=jnp.asarray(strength, jnp.float32),
                          config=config)
  return jax.vmap(one)(keys, images, masks)


def _augment_one(key: jax.Array, image: jax.Array, mask: jax.Array | None = None, *,
                 strength: jax.Array, config: AugmentConfig
                 ) -> jax.Array | tuple[jax.Array, jax.Array]:
  h, w, _ = image.shape
  k_lr, k_ud, k_rot, k_scale, k_ty, k_tx, k_bright, k_contrast = jax.random.split(key, 8)

  def signed(k, maximum):  # uniform in [-maximum, maximum] * strength
    return jax.random.uniform(k, minval=-1.0, maxval=1.0) * (maximum * strength)

  def flip_sign(k, enabled):
    if not enabled:
      return jnp.float32(1.0)
    return jnp.where(jax.random.uniform(k) < 0.5 * strength, -1.0, 1.0)

  angle = jnp.deg2rad(signed(k_rot, config.max_rotate_deg))
  scale = 1.0 + signed(k_scale, config.max_scale)
  ty, tx = signed(k_ty, config.max_translate) * h, signed(k_tx, config.max_translate) * w

  # Inverse map: each output pixel samples the input at R(-angle) (p - centre - t)
  # / scale + centre; flips mirror the sampling grid about the centre.
  cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
  y, x = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                      indexing='ij')
  dy = (y - cy - ty) * flip_sign(k_ud, config.flip_ud)
  dx = (x - cx - tx) * flip_sign(k_lr, config.flip_lr)
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  src = [(cos * dy - sin * dx) / scale + cy, (sin * dy + cos * dx) / scale + cx]
  warped = _sample(image, src, order=1)

  # Written as x * f + mean * (1 - f) + b so that f = 1, b = 0 is exactly x.
  contrast = 1.0 + signed(k_contrast, config.max_contrast)
  brightness = signed(k_bright, config.max_brightness)
  out = warped * contrast + warped.mean() * (1.0 - contrast) + brightness
  out = jnp.clip(out, 0.0, 1.0)
  if mask is None:
    return out
  # Edges extended as for the image, so a mask that touches the border follows it.
  return out, _sample(mask.astype(jnp.float32), src, order=0).astype(mask.dtype)


def _sample(image: jax.Array, src: list[jax.Array], order: int) -> jax.Array:
  """`image` (H, W, C) read at the (y, x) coordinates `src`, edges extended."""
  return jnp.stack([
      jax.scipy.ndimage.map_coordinates(image[..., i], src, order=order, mode='nearest')
      for i in range(image.shape[-1])], axis=-1)
