"""The options of the builders: :class:`ImageConfig` (every builder), :class:`RatingConfig`.

Pass them to :func:`data_builders.load` or a builder class as keyword arguments; the
builders' cache folder name encodes every option passed, so two option sets never share a
cache. :class:`~data_builders.iqa.FolderCSVConfig` and
:class:`~data_builders.corpora.CorpusConfig` extend these next to their builders.
"""

from __future__ import annotations

import dataclasses

import datasets

__all__ = ["ImageConfig", "RatingConfig", "SPLIT_SCHEMES"]

SPLIT_SCHEMES = ("auto", "official", "random", "full")


@dataclasses.dataclass
class ImageConfig(datasets.BuilderConfig):
    """Options shared by every builder.

    Attributes:
        data_dir: the folder as downloaded and unpacked (required; for the caption corpora
            it may also be the caption file itself).
        image_dir: where the images are, absolute or relative to ``data_dir``; by default
            the first of the builder's usual image folders that exists, else ``data_dir``.
        embed_images: store image bytes in the Arrow files instead of paths (portable,
            pushable to the Hub; costs disk space).
        strict: raise :class:`~data_builders.errors.MissingImageError` when a listed image
            is missing (or corrupt with ``verify_images``) instead of skipping it with a
            warning.
        verify_images: decode every kept image once with PIL to find corrupt files (slow).
        check_images: look the images up on disk (default). With ``False`` rows are kept
            whether or not the image exists, which is useful to inspect labels or captions
            without the images.
    """

    image_dir: str | None = None
    embed_images: bool = False
    strict: bool = False
    verify_images: bool = False
    check_images: bool = True


@dataclasses.dataclass
class RatingConfig(ImageConfig):
    """Options of the rating builders (see :mod:`data_builders.splits` for the split rules).

    Attributes:
        split_scheme: ``"auto"`` (default: the official split where the dataset has one and
            its split file is present, else random), ``"official"``, ``"random"`` (train/test
            80/20, by reference image for synthetic sets) or ``"full"`` (one split ``full``).
        split_index: which random split, 0-9 for the usual ten (any index >= 0 works).
        seed: base seed of the random splits and few-label draws (123 as in the release).
        train_fraction: share of images (or references) in the random training part.
        few_label: keep only this many training images (50, 100, 200 in the paper); the
            test (and validation) part is unchanged.
        repetition: which few-label draw (0-9 for the usual ten).
        split_file: a JSON split file (:func:`data_builders.write_split`) to reproduce
            exactly; overrides ``split_scheme``; rows not listed in it are left out.
        level_binning: add a ``text_level`` column (bad .. perfect) computed over all
            labelled images with :func:`data_builders.assign_levels`: ``"rank"`` (quintiles)
            or ``"width"`` (equal-width bins over the MOS range).
        mos_range: override the dataset's ``(low, high)`` MOS range used for ``score``.
        higher_is_better: override the dataset's score direction.
    """

    split_scheme: str = "auto"
    split_index: int = 0
    seed: int = 123
    train_fraction: float = 0.8
    few_label: int | None = None
    repetition: int = 0
    split_file: str | None = None
    level_binning: str | None = None
    mos_range: tuple[float, float] | None = None
    higher_is_better: bool | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.split_scheme not in SPLIT_SCHEMES:
            raise ValueError(f"split_scheme must be one of {SPLIT_SCHEMES}, got {self.split_scheme!r}")
        for name in ("split_index", "seed", "repetition"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if not 0.0 < float(self.train_fraction) < 1.0:
            raise ValueError(f"train_fraction must be in (0, 1), got {self.train_fraction}")
        if self.few_label is not None and (not isinstance(self.few_label, int) or self.few_label <= 0):
            raise ValueError(f"few_label must be a positive integer, got {self.few_label!r}")
        if self.level_binning not in (None, "rank", "width"):
            raise ValueError(f"level_binning must be None, 'rank' or 'width', got {self.level_binning!r}")
        if self.mos_range is not None:
            low, high = (float(v) for v in self.mos_range)
            if not high > low:
                raise ValueError(f"mos_range must be (low, high) with low < high, got {self.mos_range}")
            self.mos_range = (low, high)
