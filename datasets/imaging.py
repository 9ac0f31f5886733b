"""Decoding any image file or array into a square uint8 array of 1 or 3 channels."""
from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import numpy as np
from PIL import Image

# Extensions treated as images; every other file in a class folder is ignored.
IMAGE_EXTENSIONS = frozenset({
    '.jpg', '.jpeg', '.jpe', '.jfif', '.png', '.bmp', '.dib', '.gif', '.tif',
    '.tiff', '.webp', '.pgm', '.ppm', '.pbm', '.pnm', '.tga', '.jp2', '.j2k'})
# Modes with more than 8 bits per pixel (16-bit PNG/TIFF, 32-bit int or float).
_HIGH_DEPTH_MODES = frozenset({'I', 'I;16', 'I;16B', 'I;16L', 'I;16N', 'F'})
# Modes read as they are by `decode_mask`: grey values, palette indices, high depth.
_MASK_MODES = frozenset({'L', 'P', 'RGB'}) | _HIGH_DEPTH_MODES
# Decoded images in flight per batch of `map_files`; bounds memory for large images.
_CHUNK = 256

T = TypeVar('T')
U = TypeVar('U')


def is_image_file(name: str) -> bool:
  return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def to_array(image: Image.Image, image_size: int, channels: int) -> np.ndarray:
  """Converts a PIL image to uint8 (image_size, image_size, channels).

  Plain resize to a square (the aspect ratio is not kept and nothing is
  cropped) with Pillow's bilinear filter, which widens its support when
  shrinking and so antialiases. High bit-depth images (16-bit PNG, I, F) are
  stretched linearly from their own [min, max] to [0, 255], as medical scanners
  rarely use the full 16-bit range. Transparent images are composited on black.
  """
  if image.mode in _HIGH_DEPTH_MODES:
    image = _stretch_to_8bit(image)
  elif image.has_transparency_data:
    black = Image.new('RGBA', image.size, (0, 0, 0, 255))
    image = Image.alpha_composite(black, image.convert('RGBA'))
  mode = 'L' if channels == 1 else 'RGB'
  if image.mode not in ('L', 'RGB'):
    image = image.convert('RGB')  # CMYK, YCbCr, P, 1, ... have no direct path to every mode
  if image.mode != mode:
    image = image.convert(mode)
  if image.size != (image_size, image_size):
    image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
  return np.asarray(image, dtype=np.uint8).reshape(image_size, image_size, channels)


def _stretch_to_8bit(image: Image.Image) -> Image.Image:
  pixels = np.asarray(image, dtype=np.float64)
  lo, hi = pixels.min(), pixels.max()
  scaled = (pixels - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(pixels)
  return Image.fromarray(np.rint(scaled).astype(np.uint8))


def decode(path: str, image_size: int, channels: int) -> np.ndarray:
  """Reads one image file; raises whatever PIL raises for a broken file."""
  with Image.open(path) as image:
    # JPEG only: decode at a reduced DCT scale no smaller than the target, which
    # makes large JPEGs several times faster and is itself an antialiasing filter.
    image.draft('L' if channels == 1 else 'RGB', (image_size, image_size))
    image.load()
    return to_array(image, image_size, channels)


def decode_mask(path: str, image_size: int, threshold: int) -> np.ndarray:
  """Reads a mask file as uint8 (image_size, image_size, 1) of 0 and 1.

  Foreground is where the value exceeds `threshold`: the grey level, the palette
  index of palette images, or the brightest channel of colour masks (so that
  red-on-black masks work). Thresholded before resizing, and resized with
  NEAREST, so the mask stays binary and JPEG artefacts do not leak in.
  """
  with Image.open(path) as mask:
    # Like `decode`: the same reduced DCT scale as the image, hence the same grid.
    mask.draft(None, (image_size, image_size))
    mask.load()
    if mask.mode not in _MASK_MODES:
      mask = mask.convert('RGB')  # 1, LA, RGBA, CMYK, ...: alpha is not foreground
    values = np.asarray(mask)
  if values.ndim == 3:
    values = values.max(axis=-1)
  binary = Image.fromarray((values > threshold).astype(np.uint8))
  if binary.size != (image_size, image_size):
    binary = binary.resize((image_size, image_size), Image.Resampling.NEAREST)
  return np.asarray(binary, dtype=np.uint8).reshape(image_size, image_size, 1)


def decode_all(paths: Sequence[str], image_size: int, channels: int
               ) -> Iterator[np.ndarray | Exception]:
  """Decodes `paths` in order on a thread pool; yields the array, or the exception
  for a file PIL cannot read."""
  return map_files(lambda path: decode(path, image_size, channels), paths)


def map_files(read: Callable[[T], U], items: Sequence[T]) -> Iterator[U | Exception]:
  """`read` over `items` in order on a thread pool (PIL releases the GIL while decoding).

  Yields each result, or the exception `read` raised for that item.
  """
  def safe_read(item: T) -> U | Exception:
    try:
      return read(item)
    except Exception as e:  # pylint: disable=broad-except
      # Broken files raise OSError, SyntaxError, ValueError, struct.error, ...
      return e

  with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
    for start in range(0, len(items), _CHUNK):
      yield from pool.map(safe_read, items[start:start + _CHUNK])


def resize_array(images: np.ndarray, image_size: int, channels: int) -> np.ndarray:
  """Converts uint8 (N, H, W) or (N, H, W, C) arrays with the same rules as files."""
  if images.ndim == 3:
    images = images[..., None]
  n, h, w, c = images.shape
  if (h, w, c) == (image_size, image_size, channels):
    return images
  if (h, w) == (image_size, image_size) and (c, channels) == (1, 3):
    return np.repeat(images, 3, axis=-1)
  out = np.empty((n, image_size, image_size, channels), np.uint8)
  for i, image in enumerate(images):
    out[i] = to_array(Image.fromarray(image[..., 0] if c == 1 else image),
                      image_size, channels)
  return out
