"""A DataLoader dataset of normalised views of rated images, shared by fine-tuning, the
feature bank and evaluation.

Each item is decoded in a DataLoader worker with `modeling_uniqa`'s own `load_image` (EXIF
orientation, every PIL mode to RGB, a clear error naming the file) and normalised with the
model's `UniQAImageProcessor`; which views are cut is the job of a small picklable "view
maker" (`EvalViews`, `TrainCrop`, `BankViews`), which also says how far a JPEG may be
draft-decoded (`draft_size`): evaluation views decode as `uniqa score` does with the same
processor (`jpeg_draft`), training crops always see the full resolution. Keys are `index` or `(index, epoch)` so that a
sampler can ask for a fresh augmentation every epoch while the draw stays a pure function of
`(seed, epoch, index)`: results never depend on worker scheduling.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from modeling_uniqa import UniQAImageProcessor
from modeling_uniqa.processing_uniqa import load_image

from .transforms import finetune_crop_flip, finetune_view_bank


def image_sources(dataset) -> list:
    """The images of a `datasets.Dataset` (column `image`) as paths, or `(name, bytes)` when embedded."""
    import datasets

    column = dataset.cast_column("image", datasets.Image(decode=False))["image"]
    # embedded bytes, even empty ones (an error naming the image), win over the path
    return [entry["path"] if entry.get("bytes") is None else (entry["path"] or "<embedded image>", entry["bytes"]) for entry in column]


def open_source(source, draft_size: int | None = None) -> Image.Image:
    """A path or `(name, bytes)` -> an upright RGB PIL image (`load_image`: errors name the file).
    A JPEG is draft-decoded to a short side >= `draft_size` when given."""
    if isinstance(source, tuple):
        name, payload = source
        return load_image(payload, draft_size=draft_size, name=name)
    return load_image(source, draft_size=draft_size)


class EvalViews:
    """The processor's test-time views (`view_policy`, seeded per image as when scoring), of
    images decoded as `uniqa score` decodes them: JPEGs drafted when the processor has
    `jpeg_draft` and the views downsize (`UniQAImageProcessor.draft_size`), so evaluation scores
    are the model's scores."""

    def __init__(self, processor: UniQAImageProcessor, view_policy: str, view_seed: int):
        self.processor, self.view_policy, self.view_seed = processor, view_policy, view_seed
        self.draft_size = processor.draft_size(view_policy)

    def __call__(self, image: Image.Image, index: int, epoch: int) -> np.ndarray:
        return self.processor.views(image, self.view_policy, self.view_seed)


class TrainCrop:
    """One random crop + flip per image and epoch (`finetune_crop_flip`), seeded by (seed, epoch, index)."""

    draft_size = None  # crops of the native resolution: a draft would train on other pixels

    def __init__(self, crop: int, seed: int):
        self.crop, self.seed = crop, seed

    def __call__(self, image: Image.Image, index: int, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch, index, 1])
        return finetune_crop_flip(image, self.crop, rng)[None]


class BankViews:
    """The feature bank's fixed views: `num_crops` random crops and their mirrors, seeded by (seed,
    index); the last `halved_crops` of them of the image halved (`finetune_view_bank`)."""

    draft_size = None  # training views: full resolution, as `TrainCrop`

    def __init__(self, crop: int, seed: int, num_crops: int, halved_crops: int = 0):
        self.crop, self.seed, self.num_crops, self.halved_crops = crop, seed, num_crops, halved_crops

    def __call__(self, image: Image.Image, index: int, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, index, 2])
        return finetune_view_bank(image, self.crop, rng, self.num_crops, self.halved_crops)


class ImageViewDataset(Dataset):
    """`key` (`index` or `(index, epoch)`) -> `(index, float32 views (views, 3, crop, crop))`.
    Images are decoded with `make_views.draft_size` (`None`: whole)."""

    def __init__(self, sources: list, processor: UniQAImageProcessor, make_views):
        self.sources, self.processor, self.make_views = sources, processor, make_views

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, key):
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        views = self.make_views(open_source(self.sources[index], self.make_views.draft_size), index, epoch)
        return index, torch.from_numpy(self.processor.normalize_views(views))


__all__ = ["image_sources", "open_source", "EvalViews", "TrainCrop", "BankViews", "ImageViewDataset"]
