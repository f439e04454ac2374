"""Unreadable images of a training or evaluation set: found before the run starts, skipped and
counted, up to a limit.

One zero-byte, truncated or non-image file, or one image whose shape the model's processor
refuses (a 20000x20 sliver), should not end a run after an hour of training, nor be silently
trained on. `drop_unreadable` decodes every image of a split once (in DataLoader workers, JPEGs
draft-decoded near the crop size: a truncated file still fails) and cuts a centre view with the
processor; the images that fail are dropped from the split, logged with their error, and counted
(`SkippedImages`, written to the run's results as `skipped_images`). More than
`max_bad_fraction` of a split unreadable means the data is wrong, not a few files: the run stops
with one line naming the split, the count and the first failures.

Pre-training corpora are large and decoded afresh every epoch, so `drop_unreadable(...,
decode=False)` only reads what is cheap (`check_header`): the file is a non-empty regular file,
PIL recognises its format and its header's size (a decompression bomb, a 20000x20 strip the
processor refuses), and `Image.verify` passes (a PNG's chunk checksums: a truncated PNG). A
file that passes and still fails to decode (a truncated JPEG) is found by the training loader,
which trains on a stand-in and counts it (`pretrain_data.PretrainDataset`).
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass, field

from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from modeling_uniqa.processing_uniqa import UniQAImageError, not_a_regular_file

from .errors import DataError
from .image_views import image_sources, open_source

logger = logging.getLogger(__name__)

DEFAULT_MAX_BAD_FRACTION = 0.01
NAMED_IN_ERRORS = 3


def _source_name(source) -> str:
    return source[0] if isinstance(source, tuple) else str(source)


def check_header(source, processor) -> None:
    """Raise `UniQAImageError` (worded as `load_image`'s) when the image of `source` (a path or
    `(name, bytes)`) is clearly unusable, without decoding its pixels: not a non-empty regular
    file, a format PIL does not recognise, a header beyond PIL's decompression-bomb limit, a
    shape `processor` refuses (`max_aspect_ratio`), or a failed `Image.verify` (a PNG whose
    chunks are cut or corrupt). Reads the header, and a PNG's chunks, only."""
    name = _source_name(source)
    try:
        if isinstance(source, tuple):
            if not len(source[1]):
                raise UniQAImageError(f"{name}: empty (0 bytes).")
            try:
                opened = Image.open(io.BytesIO(source[1]))
            except UnidentifiedImageError as error:  # its text names the BytesIO object, not the image
                raise UniQAImageError(f"{name}: not an image format PIL can read ({len(source[1])} bytes).") from error
        else:
            if not os.path.isfile(source):
                raise UniQAImageError(f"{name}: {not_a_regular_file(source)}")
            if os.path.getsize(source) == 0:
                raise UniQAImageError(f"{name}: the file is empty (0 bytes).")
            opened = Image.open(source)
        with opened:
            size = opened.size
            opened.verify()
    except UniQAImageError:
        raise
    except Exception as error:  # whatever PIL raises on a bad header (a bomb: DecompressionBombError)
        raise UniQAImageError(f"{name}: cannot read image ({type(error).__name__}: {error}).") from error
    if min(size) < 1:
        raise UniQAImageError(f"{name}: the image has no pixels ({size[0]}x{size[1]}).")
    processor.check_shape(size, name)  # the size alone, never decoded


class _Probe(Dataset):
    """index -> (index, None) when the image decodes and yields a view (`decode=False`: passes
    `check_header`), else (index, the error's text)."""

    def __init__(self, sources: list, processor, draft_size: int | None, decode: bool = True):
        self.sources, self.processor, self.draft_size, self.decode = sources, processor, draft_size, decode

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int):
        source = self.sources[index]
        try:
            if not self.decode:
                check_header(source, self.processor)
                return index, None
            image = open_source(source, self.draft_size)
            self.processor.views(image, "center", 0, name=_source_name(source))
        except (UniQAImageError, OSError) as error:
            return index, str(error) or type(error).__name__
        return index, None


def find_unreadable(sources: list, processor, num_workers: int = 0, decode: bool = True) -> dict:
    """{index: error text} of the images of `sources` (paths or `(name, bytes)`) that cannot be
    used: decoded and cut into a view, or only their headers checked (`decode=False`, `check_header`)."""
    probe = _Probe(sources, processor, getattr(processor, "crop_size", None), decode)
    loader = DataLoader(probe, batch_size=None, num_workers=num_workers)
    return {index: error for index, error in loader if error is not None}


@dataclass
class SkippedImages:
    """The images left out of a run, per split: `{"train": [{"image": name, "error": text}], ...}`."""

    by_split: dict = field(default_factory=dict)

    def as_results(self) -> dict:
        """The `skipped_images` entry of a run's results: counts per split, and each image with its error."""
        return {
            "count": sum(len(items) for items in self.by_split.values()),
            **{split: len(items) for split, items in self.by_split.items()},
            "images": [{"split": split, **item} for split, items in self.by_split.items() for item in items],
        }


def drop_unreadable(data, split: str, processor, skipped: SkippedImages, max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
                    num_workers: int = 0, decode: bool = True, once=None):
    """`data` (a `datasets.Dataset` with an `image` column) without its unreadable images, which
    are added to `skipped` under `split` and logged. Raises `DataError` when more than
    `max_bad_fraction` of the split is unreadable. `decode=False`: only `check_header`.
    `once`: runs the search (`once(search)` -> its result), e.g. on one process of several,
    which then share the result: every process drops (or refuses) the same images."""
    sources = image_sources(data)

    def search() -> dict:
        return find_unreadable(sources, processor, num_workers, decode)

    bad = search() if once is None else once(search)
    if not bad:
        return data
    first = "; ".join(bad[index] for index in sorted(bad)[:NAMED_IN_ERRORS])
    if len(bad) > max_bad_fraction * len(sources):
        raise DataError(
            f"{len(bad)} of the {len(sources)} images of the {split} split cannot be read ({first}"
            f"{'; ...' if len(bad) > NAMED_IN_ERRORS else ''}): more than --max_bad_fraction {max_bad_fraction:g} of them; "
            "fix or remove them, or raise --max_bad_fraction."
        )
    for index in sorted(bad):
        logger.warning("Skipped (unreadable): %s", bad[index])
    logger.warning("%d of the %d images of the %s split are unreadable: skipped (see above).", len(bad), len(sources), split)
    skipped.by_split.setdefault(split, []).extend({"image": _source_name(sources[index]), "error": bad[index]} for index in sorted(bad))
    return data.select([row for row in range(len(sources)) if row not in bad])


def check_max_bad_fraction(value: float) -> float:
    """Validate a `--max_bad_fraction` (a share in [0, 1))."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f"max_bad_fraction must be in [0, 1), got {value}.")
    return value


__all__ = ["DEFAULT_MAX_BAD_FRACTION", "SkippedImages", "check_header", "check_max_bad_fraction", "drop_unreadable", "find_unreadable"]
