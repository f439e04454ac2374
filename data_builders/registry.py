"""The builder registry: :func:`available`, :func:`get_builder`, :func:`load`."""

from __future__ import annotations

import os
from typing import Any

import datasets

from .builders import ImageBuilder
from .corpora import AVACaptions, CaptionJSONL, LLaVAConversations, UniQACorpus
from .errors import UnknownDatasetError
from .iaa import AADB, AVA, BAID
from .iqa import AGIQA3K, CLIVE, CSIQ, FLIVE, LIVE, SPAQ, TID2013, FolderCSV, KADID10k, KonIQ10k

__all__ = ["BUILDERS", "available", "get_builder", "load", "mos_convention"]

BUILDERS: dict[str, type[ImageBuilder]] = {
    cls.NAME: cls
    for cls in (
        KonIQ10k,
        SPAQ,
        CLIVE,
        LIVE,
        CSIQ,
        TID2013,
        KADID10k,
        FLIVE,
        AGIQA3K,
        AVA,
        AADB,
        BAID,
        FolderCSV,
        AVACaptions,
        UniQACorpus,
        CaptionJSONL,
        LLaVAConversations,
    )
}


def available() -> list[str]:
    """Names accepted by :func:`load`: the rating datasets, ``folder_csv``, the corpora."""
    return list(BUILDERS)


def get_builder(name: str) -> type[ImageBuilder]:
    """The builder class registered under ``name`` (case-insensitive, ``-`` = ``_``)."""
    key = name.lower().replace("-", "_")
    if key not in BUILDERS:
        raise UnknownDatasetError(f"unknown dataset {name!r}; available: {', '.join(BUILDERS)}")
    return BUILDERS[key]


def mos_convention(name: str) -> dict[str, Any]:
    """``{"mos_range": (low, high) or None, "higher_is_better": bool}`` of a rating builder.

    These are the class constants ``MOS_RANGE`` and ``HIGHER_IS_BETTER``; a dataset built
    with overrides records the values it used in its metadata (:func:`get_metadata`).
    """
    cls = get_builder(name)
    if not hasattr(cls, "HIGHER_IS_BETTER"):
        raise ValueError(f"{name!r} is a caption corpus, not a rating dataset")
    return {"mos_range": cls.MOS_RANGE, "higher_is_better": cls.HIGHER_IS_BETTER}


def load(
    name: str,
    data_dir: str,
    cache_dir: str | None = None,
    download_mode: str | None = None,
    **options: Any,
) -> datasets.DatasetDict:
    """Build dataset ``name`` from the folder the user downloaded and return its splits.

    Args:
        name: one of :func:`available`.
        data_dir: the folder as downloaded and unpacked (for corpora also a caption file).
        cache_dir: where the Arrow files go (default: the ``datasets`` cache).
        download_mode: ``"reuse_dataset_if_exists"`` (default) or ``"force_redownload"``
            to regenerate.
        **options: the builder's config options (``split_index``, ``seed``,
            ``few_label``, ``repetition``, ``image_dir``, ``embed_images``, ``strict``,
            ``verify_images``, ``split_file``, ``level_binning``, ...; see
            :class:`~data_builders.configs.RatingConfig` and
            :class:`~data_builders.corpora.CorpusConfig`) or builder arguments (``hash``,
            ``writer_batch_size``).

    Returns:
        A ``datasets.DatasetDict`` (``train``/``test``, plus ``validation`` where official;
        ``full`` with ``split_scheme="full"``; ``train`` only for corpora).
    """
    builder = get_builder(name)(data_dir=os.fspath(data_dir), cache_dir=cache_dir, **options)
    # nothing is downloaded, so there are no checksums or expected split sizes to verify
    builder.download_and_prepare(download_mode=download_mode, verification_mode="no_checks")
    return builder.as_dataset()
