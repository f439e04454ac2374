"""Builders for the image-quality (IQA) datasets, reading the files as distributed.

Files each builder expects under ``data_dir`` (names matched case-insensitively; the
first candidate found is used; ``image_dir=`` overrides the image folder):

* ``koniq10k`` (:class:`KonIQ10k`): ``koniq10k_distributions_sets.csv``
  (``image_name,c1..c5,c_total,MOS,SD,set``, MOS 0-100, official sets) and/or
  ``koniq10k_scores_and_distributions.csv`` (``...,MOS,SD,MOS_zscore``; ``MOS_zscore``,
  0-100, is used). ``SD`` is on the 1-5 vote scale in both, so it becomes
  ``sd_1_to_5``, not ``std``. Images in ``512x384/`` or ``1024x768/``.
* ``spaq`` (:class:`SPAQ`): ``Annotations/MOS and Image attribute scores.xlsx`` (first
  sheet: ``Image name, MOS, Brightness, Colorfulness, Contrast, Noisiness, Sharpness``).
  Images in ``TestImage/``.
* ``clive`` (:class:`CLIVE`): ``Data/AllImages_release.mat``, ``Data/AllMOS_release.mat``,
  optional ``Data/AllStdDev_release.mat``. Images in ``Images/``; the seven training
  images ``t1.bmp`` .. ``t7.bmp`` are dropped (1,162 remain).
* ``live`` (:class:`LIVE`): ``dmos_realigned.mat`` (``dmos_new``, ``orgs``, ``dmos_std``)
  or ``dmos.mat`` (``dmos``, ``orgs``), and ``refnames_all.mat``; the 982 entries map to
  ``jp2k/img1..227.bmp, jpeg/img1..233.bmp, wn/, gblur/, fastfading/ (174 each)``;
  reference copies (``orgs == 1``) are dropped (779 remain); optional ``<folder>/info.txt``
  gives ``distortion_param``. Also looked for under ``databaserelease2/``.
* ``csiq`` (:class:`CSIQ`): ``csiq.DMOS.xlsx`` (sheet ``all_by_image``, header row
  ``image, dst_idx, dst_type, dst_lev, dmos_std, dmos`` anywhere in the first rows) or the
  third-party ``csiq_label.txt`` (``<image>.<TOKEN>.<level>.png <dmos>``). Images in
  ``dst_imgs/<folder>/<image>.<TOKEN>.<level>.png``.
* ``tid2013`` (:class:`TID2013`): ``mos_with_names.txt`` (``<MOS> <name>``), optional
  ``mos_std.txt``. Images in ``distorted_images/``.
* ``kadid10k`` (:class:`KADID10k`): ``dmos.csv`` (``dist_img,ref_img,dmos,var``; a MOS
  1-5 and a standard deviation despite the names). Images in ``images/``; option
  ``include_references`` (:class:`KADIDConfig`) adds the unrated references at MOS 5.
* ``flive`` (:class:`FLIVE`): ``labels_image.csv`` (``name,mos``), optional
  ``labels640.csv`` (official test, ``name_image``) and ``labels=640_padded.csv`` or
  ``labels<=640_padded.csv`` (``name_image,is_valid``: validation). In ``data_dir`` or ``database/``; image names
  carry sub-folders relative to ``database/``.
* ``agiqa3k`` (:class:`AGIQA3K`): ``data.csv`` (``name,prompt,adj1,adj2,style,
  mos_quality,std_quality,mos_align,std_align``). Images flat.
* ``folder_csv`` (:class:`FolderCSV`): any folder with a CSV of image names and MOS
  (UWIQA, ECIQAD, your own data); see :class:`FolderCSVConfig`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from typing import Any

import datasets

from .builders import RatingBuilder, SyntheticBuilder
from .configs import RatingConfig
from .errors import DatasetFormatError, MissingLabelFileError
from .paths import split_parts, under
from .readers import (
    load_mat,
    mat_numbers,
    mat_strings,
    norm_header,
    parse_float,
    parse_int,
    read_csv,
    read_pairs,
    read_tokens,
    read_xlsx,
    table_rows,
)
from .splits import TRAIN_VAL_TEST, check_split_list

__all__ = [
    "KonIQ10k",
    "SPAQ",
    "CLIVE",
    "LIVE",
    "CSIQ",
    "TID2013",
    "KADID10k",
    "KADIDConfig",
    "FLIVE",
    "AGIQA3K",
    "FolderCSV",
    "FolderCSVConfig",
    "parse_synthetic_name",
]

_FLOAT = datasets.Value("float64")
_TEXT = datasets.Value("string")
_SYNTHETIC_NAME = re.compile(r"^(i\d+)_(\d+)_(\d+)\.[a-z0-9]+$", re.IGNORECASE)


def parse_synthetic_name(name: str, path: str, line: int) -> dict[str, Any]:
    """``I01_05_3.bmp`` -> ``{"reference": "I01", "distortion": "05", "level": 3}``.

    The file names of TID2013 and KADID-10k (reference, distortion type, level).
    """
    match = _SYNTHETIC_NAME.match(os.path.basename(name))
    if match is None:
        raise DatasetFormatError(
            f"expected an image name like 'I01_05_3.bmp' (reference_distortion_level), got {name!r}", path, line
        )
    return {"reference": match.group(1).upper(), "distortion": match.group(2), "level": int(match.group(3))}


def _mat_column(values, count: int, what: str, path: str):
    if len(values) != count:
        raise DatasetFormatError(f"{what} has {len(values)} entries, expected {count} (one per image)", path)
    return values


class KonIQ10k(RatingBuilder):
    """KonIQ-10k (10,073 in-the-wild images; MOS 0-100, higher is better).

    Official sets (7,058 train / 1,000 validation / 2,015 test) from
    ``koniq10k_distributions_sets.csv``; without it only random splits are available.
    Extras: ``vote_distribution`` (fractions of votes 1..5), ``num_votes`` and
    ``sd_1_to_5``: the file's ``SD``, the standard deviation of the votes on the 1-5 scale.
    There is no ``std`` column: ``mos`` is the 0-100 ``MOS_zscore`` (the sets file's
    ``MOS`` is the same), which is not a linear function of the 1-5 votes, so ``SD`` cannot
    be put in its units. The 1-5 mean vote is ``sum(k * vote_distribution[k - 1])``.
    The image folder defaults to ``512x384/`` (as in the authors' fine-tuning) and else
    ``1024x768/``.
    """

    NAME = "koniq10k"
    TITLE = "KonIQ-10k in-the-wild image quality"
    HOMEPAGE = "http://database.mmsp-kn.de/koniq-10k-database.html"
    MOS_RANGE = (0.0, 100.0)
    OFFICIAL_SPLITS = TRAIN_VAL_TEST
    OFFICIAL_HINT = "the official sets need koniq10k_distributions_sets.csv"
    IMAGE_DIRS = ("512x384", "1024x768", "koniq10k_512x384/512x384", "koniq10k_1024x768/1024x768", "images")
    EXTRA_FEATURES = {
        "vote_distribution": datasets.List(_FLOAT),
        "num_votes": datasets.Value("int32"),
        "sd_1_to_5": _FLOAT,
    }
    _SETS = {"training": "train", "train": "train", "validation": "validation", "val": "validation", "test": "test"}

    def _locate(self):
        sets = self.locate("koniq10k_distributions_sets.csv", required=False)
        scores = self.locate("koniq10k_scores_and_distributions.csv", required=False)
        if sets is None and scores is None:
            names = ["koniq10k_distributions_sets.csv", "koniq10k_scores_and_distributions.csv"]
            raise MissingLabelFileError(self.NAME, [os.path.join(self.data_dir, n) for n in names], self.data_dir)
        return {"sets": sets, "scores": scores}

    def _index(self):
        path = self.files["sets"] or self.files["scores"]
        table = read_csv(path)
        mos_columns = ("MOS",) if self.files["sets"] else ("MOS_zscore",)
        rows = table_rows(table, ("image_name",), mos_columns, extras={"sd_1_to_5": (("SD",), parse_float)})
        votes = [table.column(f"c{i}") for i in range(1, 6)]
        total = table.column("c_total", required=False)
        split = table.column("set", required=bool(self.files["sets"]))
        for entry, row in zip(table.rows, rows):
            counts = [table.cell(entry, i, parse_float) for i in votes]
            n = table.cell(entry, total, parse_int, required=False)
            s = sum(counts)
            if min(counts) < 0 or s <= 0 or (n is not None and n < 0):
                raise DatasetFormatError(
                    f"the vote counts c1..c5 must be non-negative with a positive sum and c_total non-negative, "
                    f"got {counts} and c_total {n}",
                    table.path,
                    entry[0],
                )
            row["vote_distribution"] = [c / s for c in counts]
            row["num_votes"] = n if n is not None else (int(round(s)) if s > 1.5 else None)
            if split is not None:
                name = table.cell(entry, split).lower()
                if name not in self._SETS:
                    raise DatasetFormatError(
                        f"expected set training/validation/test, got {name!r}", table.path, entry[0]
                    )
                row["_split"] = self._SETS[name]
        return rows, path


class SPAQ(RatingBuilder):
    """SPAQ (11,125 smartphone photos; MOS 0-100, higher is better), random splits.

    Extras: the attribute scores ``brightness, colorfulness, contrast, noisiness,
    sharpness``. Images in ``TestImage/`` (often resized by users: pass ``image_dir``).
    """

    NAME = "spaq"
    TITLE = "SPAQ smartphone photography quality"
    HOMEPAGE = "https://github.com/h4nwei/SPAQ"
    MOS_RANGE = (0.0, 100.0)
    IMAGE_DIRS = ("TestImage", "images")
    _ATTRIBUTES = ("brightness", "colorfulness", "contrast", "noisiness", "sharpness")
    EXTRA_FEATURES = {a: _FLOAT for a in _ATTRIBUTES}

    def _locate(self):
        label = "MOS and Image attribute scores.xlsx"
        return {"scores": self.locate(*under(("Annotations", ""), label))}

    def _index(self):
        path = self.files["scores"]
        table = read_xlsx(path, required=("Image name", "MOS"))
        extras = {a: ((a,), parse_float) for a in self._ATTRIBUTES}
        return table_rows(table, ("Image name", "image_name", "image"), ("MOS",), extras=extras), path


class CLIVE(RatingBuilder):
    """LIVE In the Wild Image Quality Challenge (1,162 images; MOS 0-100, higher is better).

    Reads the three ``.mat`` files of ``Data/``; the entries named ``t1.bmp`` .. ``t7.bmp``
    (the seven training images in ``Images/trainingImages/``) are dropped, as everyone does.
    """

    NAME = "clive"
    TITLE = "LIVE In the Wild Image Quality Challenge (CLIVE)"
    HOMEPAGE = "https://live.ece.utexas.edu/research/ChallengeDB/index.html"
    MOS_RANGE = (0.0, 100.0)
    HAS_STD = True
    IMAGE_DIRS = ("Images",)
    _TRAINING = {f"t{i}.bmp" for i in range(1, 8)}

    def _locate(self):
        folders = ("Data", "")
        return {
            "names": self.locate(*under(folders, "AllImages_release.mat")),
            "mos": self.locate(*under(folders, "AllMOS_release.mat")),
            "std": self.locate(*under(folders, "AllStdDev_release.mat"), required=False),
        }

    def _index(self):
        files = self.files
        (names,) = load_mat(files["names"], ["AllImages_release"])
        names = mat_strings(names)
        (mos,) = load_mat(files["mos"], ["AllMOS_release"])
        mos = _mat_column(mat_numbers(mos), len(names), "AllMOS_release", files["mos"])
        std = [None] * len(names)
        if files["std"]:
            (values,) = load_mat(files["std"], ["AllStdDev_release"])
            std = _mat_column(mat_numbers(values), len(names), "AllStdDev_release", files["std"])
        rows = []
        for i, name in enumerate(names):
            if os.path.basename(name).lower() in self._TRAINING:
                continue
            std_i = None if std[i] is None else float(std[i])
            rows.append({"image_name": name, "mos": float(mos[i]), "std": std_i, "_line": i + 1})
        return rows, files["names"]


class LIVE(SyntheticBuilder):
    """LIVE IQA release 2 (779 distorted images of 29 references; DMOS, lower is better).

    DMOS is scaled with the nominal range 0-100 (realigned values slightly outside are
    clipped in ``score``). Split by reference image. ``level`` is empty (LIVE has no
    discrete levels); ``distortion_param`` holds the parameter from ``<folder>/info.txt``.
    ``dmos_realigned.mat`` is used when present, else ``dmos.mat``.
    """

    NAME = "live"
    TITLE = "LIVE Image Quality Assessment Database release 2"
    HOMEPAGE = "https://live.ece.utexas.edu/research/quality/subjective.htm"
    MOS_RANGE = (0.0, 100.0)
    HIGHER_IS_BETTER = False
    IMAGE_DIRS = ("databaserelease2",)
    EXTRA_FEATURES = {"distortion_param": _FLOAT}
    FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))

    def _locate(self):
        folders = ("", "databaserelease2")
        return {
            "dmos": self.locate(*under(folders, "dmos_realigned.mat", "dmos.mat")),
            "refnames": self.locate(*under(folders, "refnames_all.mat")),
        }

    def _params(self, folder: str) -> dict[str, float]:
        path = self.locate(f"{folder}/info.txt", required=False, base=self.image_root)
        params: dict[str, float] = {}
        for _line, fields in read_tokens(path) if path else ():
            if len(fields) >= 3:
                with contextlib.suppress(ValueError):  # info.txt layouts vary; the parameter is an optional extra
                    params[fields[1].lower()] = float(fields[2])
        return params

    def _index(self):
        files = self.files
        realigned = os.path.basename(files["dmos"]).lower().startswith("dmos_realigned")
        if realigned:
            dmos, orgs, std = load_mat(files["dmos"], ["dmos_new"], ["orgs"], ["dmos_std"])
        else:
            (dmos, orgs), std = load_mat(files["dmos"], ["dmos"], ["orgs"]), None
        (refnames,) = load_mat(files["refnames"], ["refnames_all"])
        count = sum(n for _, n in self.FOLDERS)
        dmos = _mat_column(mat_numbers(dmos), count, "dmos", files["dmos"])
        orgs = _mat_column(mat_numbers(orgs), count, "orgs", files["dmos"])
        std = _mat_column(mat_numbers(std), count, "dmos_std", files["dmos"]) if std is not None else None
        refnames = _mat_column(mat_strings(refnames), count, "refnames_all", files["refnames"])
        rows, i = [], 0
        for folder, n in self.FOLDERS:
            params = self._params(folder)
            for k in range(1, n + 1):
                if not orgs[i]:
                    rows.append(
                        {
                            "image_name": f"{folder}/img{k}.bmp",
                            "mos": float(dmos[i]),
                            "std": float(std[i]) if std is not None else None,
                            "reference": refnames[i],
                            "distortion": folder,
                            "level": None,
                            "distortion_param": params.get(f"img{k}.bmp"),
                            "_line": i + 1,
                        }
                    )
                i += 1
        return rows, files["dmos"]


class CSIQ(SyntheticBuilder):
    """CSIQ (866 distorted images of 30 references, 6 distortions; DMOS 0-1, lower is better).

    Split by reference image. ``distortion`` is the image sub-folder (awgn, jpeg,
    jpeg2000, fnoise, blur, contrast).
    """

    NAME = "csiq"
    TITLE = "CSIQ image quality database"
    HOMEPAGE = "https://s2.smu.edu/~eclarson/csiq.html"
    MOS_RANGE = (0.0, 1.0)
    HIGHER_IS_BETTER = False
    IMAGE_DIRS = ("dst_imgs",)
    # dst_type (normalised) -> (folder, file-name token)
    _TYPES = {
        "noise": ("awgn", "AWGN"),
        "awgn": ("awgn", "AWGN"),
        "jpeg": ("jpeg", "JPEG"),
        "jpeg_2000": ("jpeg2000", "jpeg2000"),
        "jpeg2000": ("jpeg2000", "jpeg2000"),
        "jp2k": ("jpeg2000", "jpeg2000"),
        "fnoise": ("fnoise", "fnoise"),
        "pink_noise": ("fnoise", "fnoise"),
        "blur": ("blur", "BLUR"),
        "contrast": ("contrast", "contrast"),
    }

    def _locate(self):
        xlsx = self.locate("csiq.DMOS.xlsx", required=False)
        if xlsx:
            return {"xlsx": xlsx, "txt": None}
        candidates = ["csiq.DMOS.xlsx", "csiq_label.txt"]
        txt = self.locate("csiq_label.txt", required=False)
        if txt is None:
            raise MissingLabelFileError(self.NAME, [os.path.join(self.data_dir, c) for c in candidates], self.data_dir)
        return {"xlsx": None, "txt": txt}

    def _index(self):
        if self.files["xlsx"]:
            return self._from_xlsx(self.files["xlsx"]), self.files["xlsx"]
        return self._from_txt(self.files["txt"]), self.files["txt"]

    def _from_xlsx(self, path: str) -> list[dict[str, Any]]:
        table = read_xlsx(path, required=("image", "dst_type", "dst_lev", "dmos"), sheet="all_by_image")
        rows = table_rows(table, ("image",), ("dmos",), ("dmos_std",), extras={"level": (("dst_lev",), parse_int)})
        kind = table.column("dst_type")
        for entry, row in zip(table.rows, rows):
            dst_type = re.sub(r"[^a-z0-9]+", "_", table.cell(entry, kind).lower()).strip("_")
            if dst_type not in self._TYPES:
                raise DatasetFormatError(
                    f"unknown dst_type {table.cell(entry, kind)!r}; expected one of "
                    "noise, jpeg, jpeg 2000, fnoise, blur, contrast",
                    path,
                    entry[0],
                )
            if row["level"] is None:
                raise DatasetFormatError("empty value in column 'dst_lev'", path, entry[0])
            folder, token = self._TYPES[dst_type]
            reference = row["image_name"]
            row.update(
                image_name=f"{folder}/{reference}.{token}.{row['level']}.png",
                reference=reference,
                distortion=folder,
            )
        return rows

    def _from_txt(self, path: str) -> list[dict[str, Any]]:
        rows = []
        for line, name, dmos in read_pairs(path):
            parts = os.path.basename(name).split(".")
            if len(parts) < 3 or not parts[2].isdigit():
                raise DatasetFormatError(f"expected '<image>.<TYPE>.<level>.png', got {name!r}", path, line)
            folder = parts[1].lower()
            file_name = ".".join(parts[:3]) + ".png"
            rows.append(
                {
                    "image_name": f"{folder}/{file_name}",
                    "mos": dmos,
                    "std": None,
                    "reference": parts[0],
                    "distortion": folder,
                    "level": int(parts[2]),
                    "_line": line,
                }
            )
        return rows


class TID2013(SyntheticBuilder):
    """TID2013 (3,000 images of 25 references, 24 distortions x 5 levels; MOS 0-9).

    Split by reference image; ``reference`` is ``I01`` .. ``I25``, ``distortion`` the
    two-digit type, ``level`` 1-5. ``std`` from ``mos_std.txt`` when present.
    """

    NAME = "tid2013"
    TITLE = "TID2013 image quality database"
    HOMEPAGE = "https://www.ponomarenko.info/tid2013.htm"
    MOS_RANGE = (0.0, 9.0)
    IMAGE_DIRS = ("distorted_images",)

    def _locate(self):
        folders = ("", "tid2013")
        return {
            "mos": self.locate(*under(folders, "mos_with_names.txt")),
            "std": self.locate(*under(folders, "mos_std.txt"), required=False),
        }

    def _index(self):
        path = self.files["mos"]
        rows = []
        for line, name, mos in read_pairs(path, name_field=1, value_field=0):
            rows.append({"image_name": name, "mos": mos, "std": None, "_line": line, **parse_synthetic_name(name, path, line)})
        if self.files["std"]:
            values = [(line, f[0]) for line, f in read_tokens(self.files["std"])]
            if len(values) != len(rows):
                raise DatasetFormatError(
                    f"has {len(values)} values, expected {len(rows)} (one per line of {os.path.basename(path)})",
                    self.files["std"],
                )
            for row, (line, text) in zip(rows, values):
                row["std"] = parse_float(text, self.files["std"], line, "the standard deviation")
        return rows, path


REFERENCE_DISTORTION = "00"  # the `distortion` of a reference row (`include_references`); KADID numbers its 25 from 01


@dataclasses.dataclass
class KADIDConfig(RatingConfig):
    """KADID-10k's options: those of :class:`~data_builders.configs.RatingConfig`, and

    Attributes:
        include_references: add each reference image listed in ``ref_img`` (KADID ships them in
            ``images/`` beside the distorted ones, unrated) as a row of MOS 5, the top of the
            scale ("imperceptible"), distortion ``"00"``, level 0, in its reference's split: a
            model fitted to the rows then sees what a clean picture scores.
    """

    include_references: bool = False

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.include_references, bool):
            raise ValueError(f"include_references must be true or false, got {self.include_references!r}")


class KADID10k(SyntheticBuilder):
    """KADID-10k (10,125 images of 81 references, 25 distortions x 5 levels; MOS 1-5).

    The ``dmos`` column is in fact a MOS (higher is better). ``std`` is the ``var`` column
    as it is: despite its name it already holds the standard deviation (its values, such as
    0.3 and 0.5, are ``sqrt(f(1 - f))`` of two-level vote splits, not variances).
    Split by reference image; ``reference`` (``I01`` .. ``I81``), ``distortion`` (two
    digits) and ``level`` come from the file name (``I01_05_03.png``).
    """

    NAME = "kadid10k"
    TITLE = "KADID-10k image quality database"
    HOMEPAGE = "http://database.mmsp-kn.de/kadid-10k-database.html"
    MOS_RANGE = (1.0, 5.0)
    IMAGE_DIRS = ("images",)
    BUILDER_CONFIG_CLASS = KADIDConfig

    def _locate(self):
        return {"dmos": self.locate(*under(("", "kadid10k"), "dmos.csv"))}

    def _index(self):
        path = self.files["dmos"]
        table = read_csv(path)
        rows = table_rows(table, ("dist_img",), ("dmos",), ("var",), {"ref_img": (("ref_img",), None)})
        references = {}
        for row in rows:
            row.update(parse_synthetic_name(row["image_name"], path, row["_line"]))
            reference_name = row.pop("ref_img")
            if self.config.include_references:
                if not reference_name:
                    raise DatasetFormatError(f"include_references needs the ref_img of {row['image_name']!r}", path, row["_line"])
                references.setdefault(reference_name, row)
        for name, first in references.items():  # pristine: the top of the scale, "imperceptible"
            rows.append({"image_name": name, "mos": self.MOS_RANGE[1], "std": 0.0, "reference": first["reference"],
                         "distortion": REFERENCE_DISTORTION, "level": 0, "_line": first["_line"]})
        return rows, path


class FLIVE(RatingBuilder):
    """FLIVE / PaQ-2-PiQ (39,810 images; MOS 0-100, higher is better), image labels only.

    Official split: test = ``labels640.csv`` (``name_image``), validation = rows of
    ``labels=640_padded.csv`` (or ``labels<=640_padded.csv``) with ``is_valid`` true, train
    = the rest of ``labels_image.csv``. Patch labels are not read. AVA images are listed as
    ``voc_emotic_ava/AVA__<id>.jpg``; :func:`~data_builders.corpora.image_key` gives them
    the key of AVA's ``<id>.jpg``, so excluding AVA's test split catches them.
    """

    NAME = "flive"
    TITLE = "FLIVE (PaQ-2-PiQ) in-the-wild image quality"
    HOMEPAGE = "https://github.com/baidut/PaQ-2-PiQ"
    MOS_RANGE = (0.0, 100.0)
    OFFICIAL_SPLITS = TRAIN_VAL_TEST
    OFFICIAL_HINT = "the official split needs labels640.csv"
    IMAGE_DIRS = ("database",)
    _VALID_FILES = ("labels=640_padded.csv", "labels<=640_padded.csv")

    def _locate(self):
        folders = ("", "database")
        return {
            "images": self.locate(*under(folders, "labels_image.csv")),
            "test": self.locate(*under(folders, "labels640.csv"), required=False),
            # the release names it labels=640_padded.csv; PaQ-2-PiQ's own code writes labels<=640_padded.csv
            "valid": self.locate(*under(folders, *self._VALID_FILES), required=False),
        }

    _FLAGS = {"true": True, "1": True, "false": False, "0": False}

    @staticmethod
    def _key(name: str) -> str:
        # split lists are matched as image files are found: separators and letter case tolerated
        return "/".join(split_parts(name)).lower()

    def _names(self, table, flag=None) -> set:
        """Keys of the images a split file lists (with ``flag``: only rows where it is true)."""
        column = table.column("name_image", "name")
        flag_at = table.column(flag) if flag else None
        names = set()
        for entry in table.rows:
            if flag_at is not None:
                text = table.cell(entry, flag_at)
                if text.lower() not in self._FLAGS:
                    raise DatasetFormatError(f"expected {flag} True or False, got {text!r}", table.path, entry[0])
                if not self._FLAGS[text.lower()]:
                    continue
            names.add(self._key(table.cell(entry, column)))
        return names

    def _index(self):
        path = self.files["images"]
        rows = table_rows(read_csv(path), ("name", "name_image"), ("mos", "mos_image"))
        if self.files["test"]:
            known = {self._key(row["image_name"]) for row in rows}
            test = self._names(read_csv(self.files["test"]))
            check_split_list(test, known, self.files["test"], self.NAME)
            valid = set()
            if self.files["valid"]:
                valid = self._names(read_csv(self.files["valid"]), "is_valid")
                check_split_list(valid, known, self.files["valid"], self.NAME)
            for row in rows:
                key = self._key(row["image_name"])
                row["_split"] = "test" if key in test else "validation" if key in valid else "train"
        return rows, path


class AGIQA3K(RatingBuilder):
    """AGIQA-3K (2,982 AI-generated images; quality MOS 0-5, higher is better).

    Extras: ``prompt``, ``adj1``, ``adj2``, ``style``, ``generator`` (the name prefix:
    sd1.5, midjourney, AttnGAN, glide, xl2.2, DALLE2), ``mos_align`` and ``std_align``
    (text-image alignment). ``std`` is ``std_quality``.
    """

    NAME = "agiqa3k"
    TITLE = "AGIQA-3K AI-generated image quality"
    HOMEPAGE = "https://github.com/lcysyzxdxc/AGIQA-3k-Database"
    MOS_RANGE = (0.0, 5.0)
    HAS_STD = True
    IMAGE_DIRS = ("AGIQA-3K", "images")
    EXTRA_FEATURES = {
        "prompt": _TEXT,
        "adj1": _TEXT,
        "adj2": _TEXT,
        "style": _TEXT,
        "generator": _TEXT,
        "mos_align": _FLOAT,
        "std_align": _FLOAT,
    }

    def _locate(self):
        return {"data": self.locate(*under(("", "AGIQA-3K"), "data.csv"))}

    def _index(self):
        path = self.files["data"]
        extras = {
            "prompt": (("prompt",), None),
            "adj1": (("adj1",), None),
            "adj2": (("adj2",), None),
            "style": (("style",), None),
            "mos_align": (("mos_align",), parse_float),
            "std_align": (("std_align",), parse_float),
        }
        rows = table_rows(read_csv(path), ("name",), ("mos_quality",), ("std_quality",), extras)
        for row in rows:
            row["generator"] = os.path.basename(row["image_name"]).split("_")[0]
        return rows, path


@dataclasses.dataclass
class FolderCSVConfig(RatingConfig):
    """Options of :class:`FolderCSV` (in addition to :class:`RatingConfig`).

    Attributes:
        label_file: the CSV, absolute or relative to ``data_dir``; by default ``labels.csv``,
            ``mos.csv``, ``data.csv``, or the only ``*.csv`` in ``data_dir``.
        name_column: the image-name column; by default the first of image, image_name, name,
            filename, file_name, file, path, img, dist_img.
        mos_column: the MOS column; by default the first of mos, score, dmos, rating, label.
        std_column: an optional standard-deviation column.
        reference_column: an optional reference-image column; when given, random splits
            are by reference and the ``reference``/``distortion``/``level`` columns exist
            (``distortion_column`` and ``level_column`` fill the latter two).
        delimiter: the CSV separator (sniffed by default).

    ``mos_range`` (default: the data's min and max) and ``higher_is_better`` (default
    ``True``) should be given so that scores mean the same across runs; when the score
    column is named like a DMOS (``dmos``, ``DMOS_realigned``), ``higher_is_better`` is
    required.
    """

    label_file: str | None = None
    name_column: str | None = None
    mos_column: str | None = None
    std_column: str | None = None
    reference_column: str | None = None
    distortion_column: str | None = None
    level_column: str | None = None
    delimiter: str | None = None


class FolderCSV(RatingBuilder):
    """A generic rating dataset: a folder of images plus a CSV of names and MOS.

    Used for UWIQA, ECIQAD and your own data (random 80/20 splits; by reference image when
    ``reference_column`` is set). Images in ``images/`` or next to the CSV.
    """

    NAME = "folder_csv"
    TITLE = "Image folder with a CSV of opinion scores"
    BUILDER_CONFIG_CLASS = FolderCSVConfig
    MOS_RANGE = None
    HAS_STD = True
    IMAGE_DIRS = ("images",)
    _NAMES = ("image", "image_name", "name", "filename", "file_name", "file", "path", "img", "dist_img")
    _MOS = ("mos", "score", "dmos", "rating", "label")

    @property
    def SYNTHETIC(self) -> bool:  # noqa: N802 - mirrors the class constant of other builders
        return bool(self.config.reference_column)

    def _locate(self):
        if self.config.label_file:
            return {"labels": self.locate(self.config.label_file)}
        found = self.locate("labels.csv", "mos.csv", "data.csv", required=False)
        if found is None:
            csvs = sorted(n for n in os.listdir(self.data_dir) if n.lower().endswith(".csv"))
            if len(csvs) != 1:
                raise MissingLabelFileError(
                    self.NAME,
                    [os.path.join(self.data_dir, n) for n in ("labels.csv", "mos.csv", "data.csv", "<the only *.csv>")],
                    self.data_dir,
                    hint=f"found {len(csvs)} .csv files; pass label_file=",
                )
            found = os.path.join(self.data_dir, csvs[0])
        return {"labels": found}

    def _index(self):
        path, config = self.files["labels"], self.config
        table = read_csv(path, delimiter=config.delimiter)

        def pick(chosen: str | None, default: tuple) -> tuple:
            return (chosen,) if chosen else default

        extras = {}
        if config.reference_column:
            extras = {
                "reference": ((config.reference_column,), None),
                "distortion": (pick(config.distortion_column, ("distortion", "dst_type")), None),
                "level": (pick(config.level_column, ("level", "dst_lev")), parse_int),
            }
            table.column(config.reference_column)  # required: fail early with the header
        std = pick(config.std_column, ("std", "sd", "mos_std"))
        mos = pick(config.mos_column, self._MOS)
        mos_header = table.header[table.column(*mos)]
        if config.higher_is_better is None and "dmos" in norm_header(mos_header).split("_"):
            # a DMOS read as a MOS would silently turn every score upside down
            raise DatasetFormatError(
                f"the score column {mos_header!r} looks like a DMOS (lower is better); "
                "pass higher_is_better=False for a DMOS, or higher_is_better=True if it is a MOS despite its name",
                path,
                table.header_line,
            )
        rows = table_rows(table, pick(config.name_column, self._NAMES), mos, std, extras)
        for row in rows:
            if config.reference_column and row["reference"] is None:
                raise DatasetFormatError(f"empty value in column {config.reference_column!r}", path, row["_line"])
        return rows, path
