"""Train-time image transforms of the training scripts (PIL + numpy, no torchvision).

Fine-tuning (`train_adapter.py`) uses the release's augmentation: a random `crop x crop` window
of the image at its native resolution and a horizontal flip with probability 0.5. Images whose
short side is below the crop are first upscaled to it (aspect kept), the same rule as the
test-time views of `UniQAImageProcessor`, so no view is ever padded.

Randomness comes from an explicit `numpy.random.Generator`, so a caller seeds each image's
draw (e.g. from the seed, epoch and index) and results do not depend on worker scheduling.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def upscale_to_crop(image: Image.Image, crop: int) -> Image.Image:
    """Upscale (bicubic, aspect kept) so that the short side is at least `crop`; else unchanged."""
    if min(image.size) >= crop:
        return image
    scale = crop / min(image.size)
    size = (max(crop, round(image.width * scale)), max(crop, round(image.height * scale)))
    return image.resize(size, Image.BICUBIC)


def finetune_crop_flip(image: Image.Image, crop: int, rng: np.random.Generator, flip_prob: float = 0.5) -> np.ndarray:
    """The fine-tuning augmentation: one random `crop` window, flipped with `flip_prob`.

    Returns uint8 `(crop, crop, 3)` from an RGB PIL image.
    """
    pixels = np.asarray(upscale_to_crop(image, crop))
    top = int(rng.integers(0, pixels.shape[0] - crop + 1))
    left = int(rng.integers(0, pixels.shape[1] - crop + 1))
    view = pixels[top : top + crop, left : left + crop]
    if rng.random() < flip_prob:
        view = view[:, ::-1]
    return np.ascontiguousarray(view)


def finetune_view_bank(image: Image.Image, crop: int, rng: np.random.Generator, num_crops: int) -> np.ndarray:
    """`num_crops` random windows and the mirror image of each: uint8 `(2 * num_crops, crop, crop, 3)`.

    The feature bank's fixed sample of `finetune_crop_flip`: drawing a view uniformly from it is
    a random crop with a flip of probability 0.5, over `num_crops` positions.
    """
    pixels = np.asarray(upscale_to_crop(image, crop))
    tops = rng.integers(0, pixels.shape[0] - crop + 1, size=num_crops)
    lefts = rng.integers(0, pixels.shape[1] - crop + 1, size=num_crops)
    views = []
    for top, left in zip(tops.tolist(), lefts.tolist()):
        view = pixels[top : top + crop, left : left + crop]
        views += [view, view[:, ::-1]]
    return np.ascontiguousarray(np.stack(views))


__all__ = ["upscale_to_crop", "finetune_crop_flip", "finetune_view_bank"]
