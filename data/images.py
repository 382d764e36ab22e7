"""Image examples: a source's image (H, W, C) uint8 -> pixel_values (C, H, W) float32, HF's layout, in three steps.

  fit        data.image_size None: as stored (one square size, else an error naming the field); else `resize` (the
             shorter side to image_size, bilinear, then the centre square: the usual evaluation crop) or `pad`
             (zeros around, centred; an image larger than image_size is an error)
  augment    training only: a rotation by up to data.rotate degrees either way (bilinear), a random image_size crop
             of the image padded by data.crop_padding zero pixels on each side (He et al. 2016's CIFAR recipe), then
             a horizontal flip with probability 1/2 (data.flip); the
             draws come from example_rng(seed, epoch, index, Stream.AUGMENT), so a resumed run sees the same images
  normalise  (pixel - mean[c]) / std[c] in the source's own units (0..16 for digits, 0..255 for photographs)

The normalisation constants are data.image_mean / data.image_std, or, left empty (the default), measured on
the training split when a run starts (`channel_stats`, up to MAX_STATS_IMAGES images): one rule for every
source, with no table of constants per dataset to keep in step with the catalog, and any range (digits' 0..16)
comes out near mean 0 and std 1. Every split of a run (and eval.py, which rebuilds the run) uses the training
split's figures. Numpy and Pillow only (Pillow comes with matplotlib).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

MAX_STATS_IMAGES = 10_000  # evenly spaced training images measured for the normalisation (all, if fewer)


class ImageFit(enum.Enum):
  """How an image is brought to data.image_size."""
  RESIZE = 'resize'  # the shorter side to image_size (bilinear), then the centre image_size square
  PAD = 'pad'  # zero pixels around it, centred (it must not be larger)


def fit(image: np.ndarray, size: int | None, how: ImageFit) -> np.ndarray:
  """(H, W, C) -> (size, size, C) by `how` (the image itself when size is None or it has that size already)."""
  height, width, channels = image.shape
  if size is None or (height, width) == (size, size):
    return image
  if how is ImageFit.PAD:
    if height > size or width > size:
      raise ValueError(f'an image of {height}x{width} pixels does not fit in data.image_size={size} with '
                       f'data.image_fit=pad: raise data.image_size, or set data.image_fit=resize')
    top, left = (size - height) // 2, (size - width) // 2
    return np.pad(image, ((top, size - height - top), (left, size - width - left), (0, 0)))
  from PIL import Image  # pylint: disable=import-outside-toplevel  (only resizing needs it)
  scale = size / min(height, width)
  new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
  pil = Image.fromarray(image[..., 0] if channels == 1 else image).resize((new_w, new_h), Image.Resampling.BILINEAR)
  resized = np.asarray(pil).reshape(new_h, new_w, channels)
  top, left = (new_h - size) // 2, (new_w - size) // 2
  return resized[top:top + size, left:left + size]


def augment(image: np.ndarray, rng: np.random.Generator, *, crop_padding: int, flip: bool,
            rotate: float = 0.0) -> np.ndarray:
  """A rotation by an angle uniform in [-rotate, rotate] degrees (if `rotate`), a random crop of `image` (H, W, C)
  padded by crop_padding zeros, and a horizontal flip with probability 1/2 (if `flip`). Uniform doubles only
  (`rng.random`, see data/examples.example_rng): the angle (2u - 1) * rotate, offsets floor(u * (2p + 1))."""
  if rotate:
    image = rotated(image, (2 * rng.random() - 1) * rotate)
  if crop_padding:
    height, width, _ = image.shape
    padded = np.pad(image, ((crop_padding, crop_padding), (crop_padding, crop_padding), (0, 0)))
    top, left = (int(u * (2 * crop_padding + 1)) for u in rng.random(2))
    image = padded[top:top + height, left:left + width]
  if flip and rng.random() < 0.5:
    image = image[:, ::-1]
  return image


def rotated(image: np.ndarray, degrees: float) -> np.ndarray:
  """`image` (H, W, C) turned counter-clockwise by `degrees` about its centre, bilinear, zeros where nothing was:
  float32 (an 8x8 digit has 17 grey levels; rounding the interpolated pixels back to them would lose the turn)."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  channels = [Image.fromarray(image[..., c].astype(np.float32), mode='F').rotate(
      degrees, resample=Image.Resampling.BILINEAR, fillcolor=0.0) for c in range(image.shape[-1])]
  return np.stack([np.asarray(c, np.float32) for c in channels], axis=-1)


def normalise(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
  """(H, W, C) pixels -> (C, H, W) float32, (pixel - mean[c]) / std[c]."""
  out = (image.astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
  return np.ascontiguousarray(out.transpose(2, 0, 1))


def channel_stats(count: int, image: Callable[[int], np.ndarray]) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """(mean, std) per channel of the pixels of up to MAX_STATS_IMAGES of the `count` images `image(i)` (already
  fitted), evenly spaced: the same images, so the same figures, on every run of a source."""
  indices = np.unique(np.linspace(0, count - 1, min(count, MAX_STATS_IMAGES)).round().astype(np.int64))
  total = total_sq = None
  pixels = 0
  for i in indices:
    values = image(int(i))
    x = values.reshape(-1, values.shape[-1]).astype(np.float64)
    total = x.sum(0) if total is None else total + x.sum(0)
    total_sq = (x * x).sum(0) if total_sq is None else total_sq + (x * x).sum(0)
    pixels += len(x)
  mean = total / pixels
  std = np.sqrt(np.maximum(total_sq / pixels - mean * mean, 0.0))
  return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def stored_side(shape: tuple[Any, ...] | None, size: int | None, source: str) -> int:
  """The side of the square images a source gives at data.image_size=`size` (None: as stored, which must be square
  and of one size)."""
  if size is not None:
    return size
  height, width, _ = shape
  if height is None or width is None or height != width:
    what = 'images of differing sizes' if height is None or width is None else f'{height}x{width} images'
    raise ValueError(f'data.source={source!r} holds {what}: set data.image_size to bring them to one square size '
                     f'(e.g. --config.data.image_size={min(s for s in (height, width, 224) if s)})')
  return height
