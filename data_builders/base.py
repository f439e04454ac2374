"""Shared base classes: :class:`ImageBuilder`, :class:`RatingBuilder` and their configs.

Every builder is a ``datasets.GeneratorBasedBuilder`` that reads a folder as the user
downloaded and unpacked it (``data_dir``) and writes Arrow files to ``cache_dir``.

What the base classes do, so that the dataset modules only parse their files:

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
* **Metadata.** ``DatasetInfo`` has no free-form metadata field in datasets 5.2, so the
  builders put a human-readable summary and one machine-readable line
  ``uniqa-metadata: {json}`` into ``DatasetInfo.description``; it survives ``as_dataset()``,
  ``select``/``filter``/``map``, ``save_to_disk``/``load_from_disk``. Read it back with
  :func:`get_metadata`. ``DatasetInfo.supervised_keys`` is ``(image, score)`` for rating
  datasets. For rating datasets the metadata holds ``mos_range`` and
  ``higher_is_better``; each builder class also exposes them as ``MOS_RANGE`` and
  ``HIGHER_IS_BETTER``, and :func:`mos_to_score` / :func:`score_to_mos` convert.

Rating datasets (:class:`RatingBuilder`) get the columns ``image``, ``image_path``,
``image_name`` (the path relative to the image folder, as in the label file; split files
use it), ``mos`` (as in the file), ``score`` (``mos`` scaled to [0, 1] with the dataset's
MOS range, flipped for DMOS so that 1 is best, clipped to [0, 1]), ``std`` where the
dataset gives one, ``reference``/``distortion``/``level`` for synthetic sets, the
dataset's extras, and ``text_level`` when ``level_binning`` is set.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import datasets
import numpy as np

from .errors import DatasetFormatError, MissingImageError, MissingLabelFileError
from .levels import assign_levels
from .paths import DirectoryIndex
from .readers import Table, parse_float
from .splits import assign_names

logger = logging.getLogger(__name__)

__all__ = [
    "ImageConfig",
    "RatingConfig",
    "ImageBuilder",
    "RatingBuilder",
    "SyntheticBuilder",
    "TRAIN_VAL_TEST",
    "get_metadata",
    "mos_to_score",
    "score_to_mos",
    "table_rows",
    "METADATA_PREFIX",
]

METADATA_PREFIX = "uniqa-metadata: "
TRAIN_VAL_TEST = ("train", "validation", "test")
_SPLIT_SCHEMES = ("auto", "official", "random", "full")
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


def get_metadata(obj: Any) -> dict[str, Any]:
    """The UniQA metadata of a dataset, dataset dict, ``DatasetInfo``, builder or description.

    Returns ``{}`` when there is none (for example a dataset from another source).
    """
    if isinstance(obj, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        obj = next(iter(obj.values()), None)  # the splits share one info
    info = getattr(obj, "info", obj)
    text = info if isinstance(info, str) else getattr(info, "description", "") or ""
    for line in text.splitlines():
        if line.startswith(METADATA_PREFIX):
            return json.loads(line[len(METADATA_PREFIX) :])
    return {}


def mos_to_score(mos: Any, mos_range: Sequence[float], higher_is_better: bool = True) -> Any:
    """Scale MOS to [0, 1] with 1 = best (flipped when lower is better). Not clipped."""
    low, high = float(mos_range[0]), float(mos_range[1])
    score = (np.asarray(mos, dtype=np.float64) - low) / (high - low)
    score = score if higher_is_better else 1.0 - score
    return float(score) if score.ndim == 0 else score


def score_to_mos(score: Any, mos_range: Sequence[float], higher_is_better: bool = True) -> Any:
    """Inverse of :func:`mos_to_score`: a [0, 1] score back on the dataset's MOS scale."""
    low, high = float(mos_range[0]), float(mos_range[1])
    score = np.asarray(score, dtype=np.float64)
    score = score if higher_is_better else 1.0 - score
    mos = low + score * (high - low)
    return float(mos) if mos.ndim == 0 else mos


@dataclasses.dataclass
class ImageConfig(datasets.BuilderConfig):
    """Options shared by every builder (pass them to ``load()`` or the builder).

    Attributes:
        data_dir: the folder as downloaded and unpacked (required; for the caption corpora
            it may also be the caption file itself).
        image_dir: where the images are, absolute or relative to ``data_dir``; by default
            the first of the builder's usual image folders that exists, else ``data_dir``.
        embed_images: store image bytes in the Arrow files instead of paths (portable,
            pushable to the Hub; costs disk space).
        strict: raise :class:`MissingImageError` when a listed image is missing (or corrupt
            with ``verify_images``) instead of skipping it with a warning.
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
        if self.split_scheme not in _SPLIT_SCHEMES:
            raise ValueError(f"split_scheme must be one of {_SPLIT_SCHEMES}, got {self.split_scheme!r}")
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
        base = base or self.data_dir
        found = DirectoryIndex(base).find(candidates)
        if found is None and required:
            raise MissingLabelFileError(self.NAME, [os.path.join(base, c) for c in candidates], base)
        return found

    @property
    def image_root(self) -> str:
        """The folder image names are relative to (``image_dir`` or the usual folder)."""
        if "image_root" not in self._state:
            self._state["image_root"] = self._find_image_root()
        return self._state["image_root"]

    def _find_image_root(self) -> str:
        base = self.data_dir if os.path.isdir(self.data_dir) else os.path.dirname(self.data_dir)
        if self.config.image_dir is not None:
            root = os.path.join(base, os.path.expanduser(os.fspath(self.config.image_dir)))
            if not os.path.isdir(root):
                raise MissingLabelFileError(self.NAME, [root], base, hint="image_dir is not a folder.")
            return os.path.abspath(root)
        found = DirectoryIndex(base).find([d for d in self.IMAGE_DIRS if d], want_dir=True)
        return found or base

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
        return f"{self._summary(meta)}\n{METADATA_PREFIX}{json.dumps(meta, sort_keys=True)}"

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

    def _resolve_image(self, index: DirectoryIndex, name: str) -> str | None:
        """Path of image ``name``: an existing absolute path as it is, else ``name`` under the
        image folder, else its longest tail found there (``images/1.jpg`` -> ``1.jpg``;
        ``/data/AVA/images/953619.jpg`` -> ``953619.jpg``), letter case tolerated."""
        if os.path.isabs(name) and os.path.isfile(name):
            return name
        return index.resolve_tail(name)

    def _skip(self, kind: str, names: list[str], total: int, source: str, reason: str) -> None:
        if not names:
            return
        self.skipped[kind] = names
        message = (
            f"{self.NAME}: {len(names)} of {total} images listed in {source} {reason} "
            f"(first: {', '.join(names[:5])})"
        )
        if self.config.strict:
            raise MissingImageError(message, names)
        logger.warning("%s; they were skipped. Pass strict=True to make this an error.", message)

    def _attach_images(self, rows: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
        """Give each row its ``_path``; drop (or reject) missing and, if asked, corrupt images."""
        index = DirectoryIndex(self.image_root)
        kept, missing = [], []
        for row in rows:
            path = self._resolve_image(index, row["image_name"])
            if path is None:
                if self.config.check_images:
                    missing.append(row["image_name"])
                    continue
                path = os.path.join(self.image_root, row["image_name"])
            row["_path"] = path
            kept.append(row)
        if rows and not kept:
            raise MissingImageError(
                f"{self.NAME}: none of the {len(rows)} images listed in {source} was found under "
                f"{self.image_root!r} (e.g. {rows[0]['image_name']!r}); pass image_dir= to point at them",
                [r["image_name"] for r in rows],
            )
        self._skip("missing", missing, len(rows), source, f"were not found under {self.image_root}")
        if self.config.verify_images:
            flags = [_image_ok(row["_path"]) for row in kept]
            corrupt = [row["image_name"] for row, ok in zip(kept, flags) if not ok]
            self._skip("corrupt", corrupt, len(rows), source, "could not be decoded")
            kept = [row for row, ok in zip(kept, flags) if ok]
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


def _image_ok(path: str) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.verify()
        return True
    except Exception:
        return False


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
    MOS_RANGE: tuple[float, float] | None = None
    HIGHER_IS_BETTER = True
    SYNTHETIC = False
    HAS_STD = False
    OFFICIAL_SPLITS: tuple[str, ...] = ()
    OFFICIAL_HINT = ""
    EXTRA_FEATURES: dict[str, Any] = {}

    def _index(self) -> tuple[list[dict[str, Any]], str]:
        """Parse the label files into rows (``image_name``, ``mos``, optional ``std``,
        ``reference``, ``distortion``, ``level``, extras, and ``_split`` for the official
        split), in file order; return them and the main label file (for messages)."""
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
        _check_unique(rows, source)
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


def table_rows(
    table: Table,
    name: Sequence[str],
    mos: Sequence[str],
    std: Sequence[str] = (),
    extras: dict[str, tuple[Sequence[str], Any]] | None = None,
) -> list[dict[str, Any]]:
    """Rating rows from a table with image-name and MOS columns.

    Args:
        table: the parsed CSV or spreadsheet.
        name, mos: accepted names of the image-name and MOS columns (required).
        std: accepted names of an optional standard-deviation column.
        extras: ``{output column: (accepted names, converter)}`` for optional columns;
            the converter is :func:`~data_builders.readers.parse_float`,
            :func:`~data_builders.readers.parse_int` or ``None`` (keep the text). Empty
            cells and absent columns give ``None``.
    """
    name_at, mos_at = table.column(*name), table.column(*mos)
    std_at = table.column(*std, required=False) if std else None
    extra_at = {key: (table.column(*aliases, required=False), convert) for key, (aliases, convert) in (extras or {}).items()}
    rows = []
    for entry in table.rows:
        row = {"image_name": table.cell(entry, name_at), "mos": table.cell(entry, mos_at, parse_float), "_line": entry[0]}
        if std:
            row["std"] = table.cell(entry, std_at, parse_float, required=False)
        for key, (index, convert) in extra_at.items():
            row[key] = table.cell(entry, index, convert, required=False)
        rows.append(row)
    return rows


def _check_unique(rows: list[dict[str, Any]], source: str) -> None:
    seen: dict[str, Any] = {}
    for i, row in enumerate(rows):
        name = row["image_name"]
        where = row.get("_line", i + 1)
        if name in seen:
            raise DatasetFormatError(f"image {name!r} is listed twice (lines {seen[name]} and {where})", source, where)
        seen[name] = where
