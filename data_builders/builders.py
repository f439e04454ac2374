"""The builder bases: :class:`ImageBuilder`, :class:`RatingBuilder`, :class:`SyntheticBuilder`.

Every builder is a ``datasets.GeneratorBasedBuilder`` that reads a folder as the user
downloaded and unpacked it (``data_dir``) and writes Arrow files to ``cache_dir``. The
dataset modules (:mod:`~data_builders.iqa`, :mod:`~data_builders.iaa`,
:mod:`~data_builders.corpora`) only parse their files; the bases do the rest with the
helpers of :mod:`~data_builders.paths` (finding files), :mod:`~data_builders.splits`,
:mod:`~data_builders.levels` and :mod:`~data_builders.metadata`:

* **Finding files.** Label files are looked up case-insensitively among a builder's
  candidate paths; when none exists a :class:`MissingLabelFileError` lists every path that
  was tried. Images are looked up in ``image_dir`` (an option) or the first of the
  builder's usual image folders that exists, with one directory listing per folder.
* **Images.** The ``image`` column (``datasets.Image``) holds the absolute path of the file
  by default, so nothing is copied (AVA is 32 GB); ``embed_images=True`` stores the file's
  bytes instead (with the image name as path) for portable or Hub-pushed datasets.
  Images listed but absent are skipped with a warning giving the count and the first
  names (``strict=True`` raises :class:`MissingImageError`); ``verify_images=True`` also
  decodes every image with PIL and skips (or, strict, rejects) corrupt ones.
* **Caching.** The cache folder is ``<cache_dir>/<builder name>/<config id>/<version>/<hash>``.
  The config id encodes every option passed (so ``split_index=1`` and ``split_index=2``
  never share a cache) and the hash covers the package's source code, the size and
  modification time of every label file used, and the modification time of the image
  folder, so editing the code, replacing a label file or adding images regenerates
  (``hash=`` pins the folder instead; ``download_mode="force_redownload"`` rebuilds).
* **Metadata.** ``DatasetInfo.description`` carries the ``uniqa-metadata`` line (read it
  with :func:`~data_builders.metadata.get_metadata`); ``DatasetInfo.supervised_keys`` is
  ``(image, score)`` for rating datasets. For rating datasets the metadata holds
  ``mos_range`` and ``higher_is_better``; each builder class also exposes them as
  ``MOS_RANGE`` and ``HIGHER_IS_BETTER``.

Rating datasets (:class:`RatingBuilder`) get the columns ``image``, ``image_path``,
``image_name`` (the path relative to the image folder, as in the label file; split files
use it), ``mos`` (as in the file), ``score`` (``mos`` scaled to [0, 1] with the dataset's
MOS range, flipped for DMOS so that 1 is best, clipped to [0, 1]), ``std`` where the
dataset gives one in the units of ``mos`` (never negative), ``reference``/``distortion``/
``level`` for synthetic sets, the dataset's extras, and ``text_level`` when
``level_binning`` is set.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from typing import Any

import datasets
import numpy as np

from .configs import ImageConfig, RatingConfig
from .errors import DatasetFormatError, MissingLabelFileError, row_position
from .levels import assign_levels
from .metadata import describe, mos_to_score
from .paths import attach_images, find_image_root, locate_file
from .splits import TRAIN_VAL_TEST, assign_names

logger = logging.getLogger(__name__)

__all__ = ["ImageBuilder", "RatingBuilder", "SyntheticBuilder"]

_CODE_HASH: str | None = None


def _code_hash() -> str:
    """Hash of this package's source files: editing the builders invalidates their caches."""
    global _CODE_HASH
    if _CODE_HASH is None:
        digest = hashlib.sha256()
        folder = os.path.dirname(os.path.abspath(__file__))
        for name in sorted(os.listdir(folder)):
            if name.endswith(".py"):
                with open(os.path.join(folder, name), "rb") as handle:
                    digest.update(name.encode() + b"\0" + handle.read())
        _CODE_HASH = digest.hexdigest()
    return _CODE_HASH


class ImageBuilder(datasets.GeneratorBasedBuilder):
    """Base of all builders: file finding, images, caching, metadata (see module docstring).

    Subclasses set ``NAME`` (the registry and cache name), ``TITLE``, ``IMAGE_DIRS``
    (usual image folders relative to ``data_dir``, ``""`` meaning ``data_dir`` itself) and
    implement :meth:`_locate` (find the label files), :meth:`_features` and
    :meth:`_collect` (the rows, each with ``image_name`` and ``_split``).
    """

    NAME = ""
    TITLE = ""
    TASK = "quality"
    HOMEPAGE = ""
    CITATION = ""
    IMAGE_DIRS: tuple[str, ...] = ("",)
    VERSION = datasets.Version("1.0.0")
    BUILDER_CONFIG_CLASS = ImageConfig
    SUPERVISED_KEYS: tuple[str, str] | None = None
    UNIQUE_IMAGES = False  # True: two rows naming one file (by case or folder prefix) are an error

    def __init__(self, *args, dataset_name: str | None = None, **kwargs):
        self._state: dict[str, Any] = {}
        self.skipped: dict[str, list[str]] = {}
        super().__init__(*args, dataset_name=dataset_name or self.NAME, **kwargs)
        self.name = self.NAME
        self.info.builder_name = self.NAME

    # ----------------------------------------------------------------- locating files
    @property
    def data_dir(self) -> str:
        """Absolute ``data_dir``; raises if it was not given or does not exist."""
        if self.config.data_dir is None:
            raise ValueError(f"{self.NAME}: data_dir is required (the folder you downloaded and unpacked)")
        path = os.path.abspath(os.path.expanduser(os.fspath(self.config.data_dir)))
        if not os.path.exists(path):
            raise MissingLabelFileError(self.NAME, [path], path, hint="data_dir does not exist.")
        return path

    @property
    def files(self) -> dict[str, str | None]:
        """The label files in use, by role (located once, see :meth:`_locate`)."""
        if "files" not in self._state:
            files = self._locate()
            files.update(self._option_files())
            self._state["files"] = files
        return self._state["files"]

    def _option_files(self) -> dict[str, str | None]:
        """Files named by options (such as ``split_file``) that the cache must depend on."""
        return {}

    def _locate(self) -> dict[str, str | None]:
        """Find the label files; return ``{role: path or None}`` (raise when required ones lack)."""
        raise NotImplementedError

    def locate(self, *candidates: str, required: bool = True, base: str | None = None) -> str | None:
        """The first of ``candidates`` (paths relative to ``base``/``data_dir``) that is a file.

        Raises:
            MissingLabelFileError: when ``required`` and none exists; lists every candidate.
        """
        return locate_file(self.NAME, base or self.data_dir, candidates, required)

    @property
    def image_root(self) -> str:
        """The folder image names are relative to (``image_dir`` or the usual folder)."""
        if "image_root" not in self._state:
            self._state["image_root"] = self._find_image_root()
        return self._state["image_root"]

    def _find_image_root(self) -> str:
        base = self.data_dir if os.path.isdir(self.data_dir) else os.path.dirname(self.data_dir)
        return find_image_root(self.NAME, base, self.config.image_dir, self.IMAGE_DIRS)

    # ------------------------------------------------------------------------ caching
    def _build_cache_dir(self):
        if self.hash is None:
            self.hash = self._fingerprint()
        return super()._build_cache_dir()

    def _fingerprint(self) -> str:
        digest = hashlib.sha256(_code_hash().encode())
        for role, path in sorted(self.files.items()):
            if path:
                stat = os.stat(path)
                digest.update(f"{role}|{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        if os.path.isdir(self.image_root):
            digest.update(f"images|{self.image_root}|{os.stat(self.image_root).st_mtime_ns}".encode())
        return digest.hexdigest()[:16]

    # ----------------------------------------------------------------------- the info
    def _features(self) -> dict[str, Any]:
        raise NotImplementedError

    def _metadata(self) -> dict[str, Any]:
        """The machine-readable metadata (subclasses add to it)."""
        meta = {
            "dataset": self.NAME,
            "task": self.TASK,
            "builder_version": str(self.VERSION),
            "image_storage": "bytes" if self.config.embed_images else "path",
        }
        meta.update(self._state.get("run_metadata", {}))
        return meta

    def _summary(self, meta: dict[str, Any]) -> str:
        return self.TITLE

    def _description(self) -> str:
        meta = self._metadata()
        return describe(self._summary(meta), meta)

    def _info(self) -> datasets.DatasetInfo:
        keys = self.SUPERVISED_KEYS
        return datasets.DatasetInfo(
            description=self._description(),
            features=datasets.Features(self._features()),
            homepage=self.HOMEPAGE,
            citation=self.CITATION,
            supervised_keys=datasets.info.SupervisedKeysData(*keys) if keys else None,
        )

    # -------------------------------------------------------------------- generation
    def _collect(self) -> tuple[list[dict[str, Any]], list[str], str]:
        """Parse the files: ``(rows, split names in order, source file for messages)``.

        Each row holds the output columns (at least ``image_name``) and ``_split``; rows
        whose ``_split`` is ``None`` are left out.
        """
        raise NotImplementedError

    def _attach_images(self, rows: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
        """Give each row its ``_path``; drop (or reject) missing and, if asked, corrupt images."""
        config = self.config
        kept, self.skipped = attach_images(
            rows,
            self.image_root,
            self.NAME,
            source,
            check_images=config.check_images,
            verify_images=config.verify_images,
            strict=config.strict,
            unique=self.UNIQUE_IMAGES,
        )
        return kept

    def _split_generators(self, dl_manager):
        rows, split_names, source = self._collect()
        labelled = {row["_split"] for row in rows if row.get("_split")}
        rows = self._attach_images([row for row in rows if row.get("_split")], source)
        run = self._state.setdefault("run_metadata", {})
        run.update(image_root=self.image_root, skipped_images={k: len(v) for k, v in self.skipped.items()})
        groups: dict[str, list[dict[str, Any]]] = {name: [] for name in split_names if name in labelled}
        for row in rows:
            groups[row["_split"]].append(row)
        for name in [name for name, group in groups.items() if not group]:
            logger.warning("%s: no image of split %r was found on disk; the split is left out", self.NAME, name)
            del groups[name]  # datasets cannot read back an empty split
        run["num_rows"] = {name: len(group) for name, group in groups.items()}
        self._state["groups"] = groups
        self.info.description = self._description()
        return [datasets.SplitGenerator(name=name, gen_kwargs={"split": name}) for name in groups]

    def _image_value(self, row: dict[str, Any]) -> Any:
        if self.config.embed_images:
            with open(row["_path"], "rb") as handle:
                data = handle.read()
            # datasets drops the bytes when "path" names an existing file (relative to the
            # working directory), so the name is only kept when it cannot be mistaken for one
            name = row["image_name"]
            return {"bytes": data, "path": None if os.path.exists(name) else name}
        return row["_path"]

    def _generate_examples(self, split: str):
        columns = [c for c in self.info.features if c not in ("image", "image_path")]
        for key, row in enumerate(self._state["groups"][split]):
            example = {column: row.get(column) for column in columns}
            example["image"] = self._image_value(row)
            example["image_path"] = row["_path"]
            yield key, example


class RatingBuilder(ImageBuilder):
    """Base of the IQA/IAA rating datasets.

    Subclasses set ``MOS_RANGE`` (nominal ``(low, high)``, ``None`` = the data's min and
    max), ``HIGHER_IS_BETTER``, ``SYNTHETIC`` (reference/distortion/level columns and
    reference-disjoint random splits), ``HAS_STD``, ``OFFICIAL_SPLITS`` (split names of the
    official partition, in order; empty when there is none), ``EXTRA_FEATURES``, and
    implement :meth:`_index`.
    """

    BUILDER_CONFIG_CLASS = RatingConfig
    SUPERVISED_KEYS = ("image", "score")
    UNIQUE_IMAGES = True  # one label per image: a second row for a file could land in another split
    MOS_RANGE: tuple[float, float] | None = None
    HIGHER_IS_BETTER = True
    SYNTHETIC = False
    HAS_STD = False
    OFFICIAL_SPLITS: tuple[str, ...] = ()
    OFFICIAL_HINT = ""
    EXTRA_FEATURES: dict[str, Any] = {}

    def _index(self) -> tuple[list[dict[str, Any]], str]:
        """Parse the label files into rows (``image_name``, ``mos``, optional ``std``,
        ``reference``, ``distortion``, ``level``, extras, ``_split`` for the official
        split, ``_line`` and, when rows come from several files, ``_source``: the row's
        file), in file order; return them and the main label file (for messages)."""
        raise NotImplementedError

    @property
    def higher_is_better(self) -> bool:
        override = self.config.higher_is_better
        return self.HIGHER_IS_BETTER if override is None else bool(override)

    def _data_range(self, rows: list[dict[str, Any]]) -> tuple[float, float]:
        """The MOS range in use: the ``mos_range`` option, else ``MOS_RANGE``, else the data's."""
        if self.config.mos_range is not None:
            return tuple(self.config.mos_range)
        if self.MOS_RANGE is not None:
            return tuple(float(v) for v in self.MOS_RANGE)
        values = [row["mos"] for row in rows]
        low, high = (min(values), max(values)) if values else (0.0, 1.0)
        return (float(low), float(high) if high > low else float(low) + 1.0)

    def _features(self) -> dict[str, Any]:
        features = {
            "image": datasets.Image(),
            "image_path": datasets.Value("string"),
            "image_name": datasets.Value("string"),
            "mos": datasets.Value("float64"),
            "score": datasets.Value("float64"),
        }
        if self.HAS_STD:
            features["std"] = datasets.Value("float64")
        if self.SYNTHETIC:
            features["reference"] = datasets.Value("string")
            features["distortion"] = datasets.Value("string")
            features["level"] = datasets.Value("int32")
        features.update(self.EXTRA_FEATURES)
        if self.config.level_binning:
            features["text_level"] = datasets.Value("string")
        return features

    def _metadata(self) -> dict[str, Any]:
        meta = super()._metadata()
        nominal = self.config.mos_range or self.MOS_RANGE
        meta.setdefault("mos_range", [float(v) for v in nominal] if nominal else None)
        meta.update(
            higher_is_better=self.higher_is_better,
            mos_kind="MOS" if self.higher_is_better else "DMOS",
            split_unit="reference" if self.SYNTHETIC else "image",
            official_splits=list(self.OFFICIAL_SPLITS),
            level_binning=self.config.level_binning,
        )
        return meta

    def _summary(self, meta: dict[str, Any]) -> str:
        low, high = meta["mos_range"] or ("min", "max")
        direction = "higher is better" if meta["higher_is_better"] else "lower is better (DMOS)"
        flip = "1 - (mos - low) / (high - low)" if not meta["higher_is_better"] else "(mos - low) / (high - low)"
        return (
            f"{self.TITLE}. MOS range [{low}, {high}], {direction}. "
            f"Column 'score' = {flip}, clipped to [0, 1] (1 = best)."
        )

    def _scheme(self, rows: list[dict[str, Any]]) -> str:
        has_official = bool(self.OFFICIAL_SPLITS) and any(row.get("_split") for row in rows)
        scheme = self.config.split_scheme
        if scheme == "auto":
            return "official" if has_official else "random"
        if scheme == "official" and not has_official:
            raise ValueError(
                f"{self.NAME} has no official split"
                + (f": {self.OFFICIAL_HINT}" if self.OFFICIAL_HINT else "")
                + "; use split_scheme='random'"
            )
        return scheme

    def _collect(self) -> tuple[list[dict[str, Any]], list[str], str]:
        rows, source = self._index()
        _check_rows(rows, source)
        low, high = self._data_range(rows)
        mos = [row["mos"] for row in rows]
        scores = np.clip(np.asarray(mos_to_score(mos, (low, high), self.higher_is_better)), 0.0, 1.0)
        outside = int(sum(1 for m in mos if m < low or m > high))
        if outside:
            logger.warning(
                "%s: %d MOS values in %s fall outside the range [%s, %s]; their scores were clipped to [0, 1]",
                self.NAME, outside, source, low, high,
            )
        levels = (
            assign_levels(mos, self.higher_is_better, self.config.level_binning, (low, high))
            if self.config.level_binning
            else None
        )
        for i, row in enumerate(rows):
            row["score"] = float(scores[i])
            if levels is not None:
                row["text_level"] = levels[i]
        scheme = self._scheme(rows)
        names = [row["image_name"] for row in rows]
        units = [row["reference"] for row in rows] if self.SYNTHETIC else names
        assigned, split_info = assign_names(
            names,
            units,
            [row.get("_split") for row in rows],
            scheme,
            seed=self.config.seed,
            split_index=self.config.split_index,
            train_fraction=self.config.train_fraction,
            split_file=self.config.split_file,
            few_label=self.config.few_label,
            repetition=self.config.repetition,
        )
        for row, split in zip(rows, assigned):
            row["_split"] = split
        if split_info["split_scheme"] == "official":
            order = list(self.OFFICIAL_SPLITS)
        elif split_info["split_scheme"] == "full":
            order = ["full"]
        else:
            order = list(TRAIN_VAL_TEST) + sorted({s for s in assigned if s} - set(TRAIN_VAL_TEST))
        self._state["run_metadata"] = dict(
            mos_range=[low, high], split=split_info, label_files=sorted(p for p in self.files.values() if p)
        )
        return rows, order, source

    def _option_files(self) -> dict[str, str | None]:
        if not self.config.split_file:
            return {}
        path = os.path.abspath(os.fspath(self.config.split_file))
        if not os.path.isfile(path):
            raise MissingLabelFileError(self.NAME, [path], os.path.dirname(path), hint="split_file not found.")
        return {"split_file": path}


class SyntheticBuilder(RatingBuilder):
    """Base of the synthetic-distortion sets (LIVE, CSIQ, TID2013, KADID-10k).

    Rows carry ``reference``, ``distortion``, ``level`` and ``std``; random splits are by
    reference image, so no content is in both parts.
    """

    SYNTHETIC = True
    HAS_STD = True


def _check_rows(rows: list[dict[str, Any]], source: str) -> None:
    """At least one row; each image listed once; its MOS a finite number; a standard
    deviation, where given, a finite non-negative number.

    Text and CSV values are checked as they are parsed; this also catches values read from
    ``.mat`` files (CLIVE, LIVE), where a NaN would otherwise become a NaN score.
    """
    if not rows:
        raise DatasetFormatError("no ratings found (is the label file empty or truncated?)", source)
    seen: dict[str, dict[str, Any]] = {}
    for i, row in enumerate(rows):
        name = row["image_name"]
        where, path = row.get("_line", i + 1), row.get("_source", source)
        if name in seen:
            first = row_position(seen[name], path)
            raise DatasetFormatError(f"image {name!r} is listed twice ({first} and line {where})", path, where)
        seen[name] = row
        mos = row["mos"]
        if not math.isfinite(mos):
            raise DatasetFormatError(f"the MOS of {name!r} must be a finite number, got {mos}", path, where)
        std = row.get("std")
        if std is not None and not (math.isfinite(std) and std >= 0):
            raise DatasetFormatError(f"the standard deviation of {name!r} must be >= 0, got {std}", path, where)
