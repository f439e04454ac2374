"""Train-time image transforms of the training scripts (PIL + numpy, no torchvision).

Pre-training (`PretrainTransform`, `train_pretrain.py`). The authors' release pre-trains with
the `preprocess` that OpenAI's `clip.load` returns, i.e. CLIP's *evaluation* transform: resize
the short side to 224 (bicubic), centre-crop 224x224, scale to [0, 1], normalise with the
OpenAI CLIP mean/std; no augmentation. That is `mode="release"`, the default.
`mode="random_resized_crop"` is the usual CLIP training augmentation instead: a random crop of
90-100% of the image area (aspect 3/4-4/3), resized to 224 bicubic, then normalised.
`mode="native_crop"` cuts a random `size x size` window of the image at its native resolution
(never resized, as the test-time views of `UniQAImageProcessor` are): a model that must see
blur, noise or compression needs the pixels at the scale they were degraded at (UniQA-Tiny).

Fine-tuning (`finetune_crop_flip`, `finetune_view_bank`, `train_adapter.py`) uses the
release's augmentation: a random `crop x crop` window of the image at its native resolution and
a horizontal flip with probability 0.5. Images whose short side is below the crop are first
upscaled to it (aspect kept), the same rule as the test-time views of `UniQAImageProcessor`, so
no view is ever padded.

Randomness comes from an explicit `numpy.random.Generator` passed by the caller, derived from
(seed, epoch, index), so a draw never depends on the DataLoader worker or on a resumed run.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from modeling_uniqa.processing_uniqa import cut_views, short_side_size, view_detail

PRETRAIN_MODES = ("release", "random_resized_crop", "native_crop")


class PretrainTransform:
    """An RGB PIL image -> float32 array (3, size, size), CLIP-normalised.

    Args:
        size: side of the square output (the vision tower's ``image_size``).
        mode: ``"release"`` (resize short side + centre crop, the authors' release),
            ``"random_resized_crop"`` (area ``scale``, aspect ``ratio``, bicubic) or
            ``"native_crop"`` (a random window at native resolution).
        scale, ratio: ranges of the random crop's area fraction and aspect ratio.
        hflip: probability of a horizontal flip (0 in the release).
        detail_prob, detail_candidates: ``"native_crop"`` only: with probability ``detail_prob`` the
            window is the most detailed (`view_detail`) of ``detail_candidates`` random ones, as
            half of the test-time ``detail<N>`` views are.
        rot90: turn each output by a random multiple of 90 degrees (a square output). Blur, noise and
            compression look alike any way up, the content does not: four contents per photo.
        image_mean, image_std: normalisation (OpenAI CLIP's by default).
    """

    def __init__(
        self,
        size: int = 224,
        mode: str = "release",
        scale: tuple[float, float] = (0.9, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: float = 0.0,
        image_mean=None,
        image_std=None,
        detail_prob: float = 0.0,
        detail_candidates: int = 4,
        rot90: bool = False,
    ):
        if mode not in PRETRAIN_MODES:
            raise ValueError(f"Unknown pre-training transform mode {mode!r}; use one of {', '.join(PRETRAIN_MODES)}.")
        if not (0 < scale[0] <= scale[1] <= 1):
            raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {scale}.")
        if not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"ratio must satisfy 0 < low <= high, got {ratio}.")
        if not 0.0 <= hflip <= 1.0:
            raise ValueError(f"hflip must be a probability, got {hflip}.")
        if not 0.0 <= detail_prob <= 1.0:
            raise ValueError(f"detail_prob must be a probability, got {detail_prob}.")
        if detail_prob and mode != "native_crop":
            raise ValueError(f"detail_prob applies to mode 'native_crop' only, not {mode!r}.")
        if int(detail_candidates) < 1:
            raise ValueError(f"detail_candidates must be at least 1, got {detail_candidates}.")
        self.detail_prob, self.detail_candidates = float(detail_prob), int(detail_candidates)
        self.size = int(size)
        self.mode = mode
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)
        self.hflip = float(hflip)
        self.rot90 = bool(rot90)
        mean = np.asarray(image_mean if image_mean is not None else OPENAI_CLIP_MEAN, dtype=np.float32)
        std = np.asarray(image_std if image_std is not None else OPENAI_CLIP_STD, dtype=np.float32)
        self._mean, self._inv_std = mean * 255.0, 1.0 / (std * 255.0)

    @property
    def is_random(self) -> bool:
        return self.mode != "release" or self.hflip > 0 or self.rot90

    def _center(self, image: Image.Image) -> Image.Image:
        # Like CLIP's Resize(size) + CenterCrop(size): short side to `size`, then the middle.
        width, height = short_side_size(image.width, image.height, self.size)
        left, top = int(round((width - self.size) / 2.0)), int(round((height - self.size) / 2.0))
        if min(image.size) < self.size:  # an upscale: only the middle's pixels (a thin strip's whole upscale is GBs)
            return Image.fromarray(cut_views(image, (width, height), self.size, [(left, top, False)])[0])
        image = image.resize((width, height), Image.BICUBIC)
        return image.crop((left, top, left + self.size, top + self.size))

    def crop_box(self, width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """(left, top, crop width, crop height) of a random-resized crop, as torchvision draws it."""
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
        # Fallback: the largest centred crop within the allowed aspect ratios.
        aspect = width / height
        if aspect < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif aspect > self.ratio[1]:
            w, h = int(round(height * self.ratio[1])), height
        else:
            w, h = width, height
        return (width - w) // 2, (height - h) // 2, w, h

    def __call__(self, image: Image.Image, rng: np.random.Generator | None = None) -> np.ndarray:
        if self.is_random and rng is None:
            raise ValueError(
                f"PretrainTransform(mode={self.mode!r}, hflip={self.hflip}, rot90={self.rot90}) needs a numpy Generator `rng`."
            )
        if self.mode == "native_crop":
            if self.detail_prob and rng.random() < self.detail_prob:
                pixels = detailed_crop_flip(image, self.size, rng, self.detail_candidates, flip_prob=self.hflip)
            else:
                pixels = finetune_crop_flip(image, self.size, rng, flip_prob=self.hflip)
            pixels = pixels.astype(np.float32)
        else:
            if self.mode == "release":
                image = self._center(image)
            else:
                left, top, w, h = self.crop_box(image.width, image.height, rng)
                image = image.resize((self.size, self.size), Image.BICUBIC, box=(left, top, left + w, top + h))
            pixels = np.asarray(image, dtype=np.float32)  # (size, size, 3)
            if self.hflip > 0 and rng.random() < self.hflip:
                pixels = pixels[:, ::-1]
        if self.rot90:  # drawn last and only when asked: runs without it keep their crops
            pixels = np.rot90(pixels, k=int(rng.integers(4)))
        pixels = (pixels - self._mean) * self._inv_std
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def upscaled_size(image: Image.Image, crop: int) -> tuple:
    """The size of `image` upscaled (aspect kept) so that its short side is at least `crop`, as the
    test-time views do; its own size when it is large enough."""
    return short_side_size(image.width, image.height, crop) if min(image.size) < crop else image.size


def finetune_crop_flip(image: Image.Image, crop: int, rng: np.random.Generator, flip_prob: float = 0.5) -> np.ndarray:
    """The fine-tuning augmentation: one random `crop` window, flipped with `flip_prob`.

    Returns uint8 `(crop, crop, 3)` from an RGB PIL image. Small images are cut from their
    upscale (`upscaled_size`), computing only the window's pixels (`cut_views`).
    """
    width, height = upscaled_size(image, crop)
    top = int(rng.integers(0, height - crop + 1))
    left = int(rng.integers(0, width - crop + 1))
    flip = rng.random() < flip_prob
    return np.ascontiguousarray(cut_views(image, (width, height), crop, [(left, top, flip)])[0])


def _random_windows(width: int, height: int, crop: int, rng: np.random.Generator, count: int) -> list:
    """`count` random `(left, top)` of `crop` windows in a `width` x `height` image (tops drawn first)."""
    tops = rng.integers(0, height - crop + 1, size=count)
    lefts = rng.integers(0, width - crop + 1, size=count)
    return list(zip(lefts.tolist(), tops.tolist()))


def detailed_crop_flip(image: Image.Image, crop: int, rng: np.random.Generator, candidates: int, flip_prob: float = 0.5) -> np.ndarray:
    """The most detailed (`view_detail`) of `candidates` random `crop` windows, flipped with
    `flip_prob`: uint8 `(crop, crop, 3)`."""
    width, height = upscaled_size(image, crop)
    views = cut_views(image, (width, height), crop, [(left, top, False) for left, top in _random_windows(width, height, crop, rng, candidates)])
    view = views[int(np.argmax(view_detail(views)))]
    return np.ascontiguousarray(view[:, ::-1] if rng.random() < flip_prob else view)


def finetune_view_bank(image: Image.Image, crop: int, rng: np.random.Generator, num_crops: int, halved_crops: int = 0) -> np.ndarray:
    """`num_crops` random windows and the mirror image of each: uint8 `(2 * num_crops, crop, crop, 3)`.

    The feature bank's fixed sample of `finetune_crop_flip`: drawing a view uniformly from it is
    a random crop with a flip of probability 0.5, over `num_crops` positions. The last
    `halved_crops` of them are cut from the image halved by a 2x2 average, as the `pyramid<N>`
    test-time views are (`processing_uniqa.pyramid_views`), where the halved image is at least
    `crop` on its short side; otherwise all are cut at full size.
    """
    width, height = upscaled_size(image, crop)
    if not 0 <= halved_crops <= num_crops:
        raise ValueError(f"halved_crops ({halved_crops}) must be between 0 and num_crops ({num_crops})")
    if min(image.size) < 2 * crop:
        halved_crops = 0
    native = num_crops - halved_crops
    boxes = [(left, top, flip) for left, top in _random_windows(width, height, crop, rng, native) for flip in (False, True)]
    views = cut_views(image, (width, height), crop, boxes)
    if halved_crops:
        small = image.reduce(2)
        boxes = [(left, top, flip) for left, top in _random_windows(*small.size, crop, rng, halved_crops) for flip in (False, True)]
        views = np.concatenate([views, cut_views(small, small.size, crop, boxes)])
    return np.ascontiguousarray(views)


__all__ = ["PRETRAIN_MODES", "PretrainTransform", "detailed_crop_flip", "finetune_crop_flip", "finetune_view_bank", "upscaled_size"]
