"""Builders for the image-aesthetics (IAA) datasets, reading the files as distributed.

Files each builder expects under ``data_dir`` (names matched case-insensitively):

* ``ava`` (:class:`AVA`): ``AVA.txt`` (15 integers a line: index, image id, vote counts
  for scores 1..10, semantic tag 1, tag 2, challenge id), optional ``tags.txt`` and
  ``challenges.txt`` (``<id> <name>``), and ``aesthetics_image_lists/generic_test.jpgl``
  (the 20,000 test ids of the standard split). Also looked for under ``AVA_dataset/``.
  Images ``<id>.jpg`` in ``images/`` (or ``image/``, or ``data_dir``).
* ``aadb`` (:class:`AADB`): ``imgListFiles_label/imgListTrainRegression_score.txt``,
  ``imgListValidationRegression_score.txt``, ``imgListTestNewRegression_score.txt``
  (``<file> <score>``) and the attribute files
  ``imgList{Train,Validation,TestNew}Regression_<Attribute>.txt`` (for the test part the
  older ``imgListTestRegression_<Attribute>.txt`` is used when no TestNew file exists).
  Images in ``datasetImages_originalSize/``.
* ``baid`` (:class:`BAID`): ``train_set.csv``, ``val_set.csv``, ``test_set.csv``
  (``image,score``), in ``data_dir`` or ``dataset/``. Images in ``images/``.
"""

from __future__ import annotations

import math
import os

import datasets

from .builders import RatingBuilder
from .errors import DatasetFormatError
from .paths import under
from .readers import read_csv, read_pairs, read_tokens, table_rows
from .splits import TRAIN_VAL_TEST, check_split_list

__all__ = ["AestheticsBuilder", "AVA", "AADB", "BAID", "read_id_names"]

_INT = datasets.Value("int32")


def read_id_names(path: str | None) -> dict[int, str]:
    """``<integer id> <name ...>`` lines (AVA's ``tags.txt``/``challenges.txt``) as a dict."""
    names: dict[int, str] = {}
    for line, fields in read_tokens(path) if path else ():
        try:
            names[int(fields[0])] = " ".join(fields[1:])
        except ValueError:
            raise DatasetFormatError(f"expected '<integer id> <name>', got {' '.join(fields)!r}", path, line) from None
    return names


class AestheticsBuilder(RatingBuilder):
    """Base of the aesthetics (IAA) rating datasets: ``task`` is ``aesthetics``."""

    TASK = "aesthetics"


class AVA(AestheticsBuilder):
    """AVA (255,530 photos; MOS = mean vote on 1-10, higher is better).

    Official split: test = ``generic_test.jpgl`` (20,000 ids), train = all others; images
    absent on disk (a few hundred in the usual copies) are skipped with a warning.
    ``std`` is the standard deviation of the votes. Extras: ``votes`` (counts of scores
    1..10), ``num_votes``, ``semantic_tag_ids`` and ``semantic_tags`` (names from
    ``tags.txt``; 0 = none is left out), ``challenge_id`` and ``challenge``.
    Indexing opens no image: one listing of the image folder answers every look-up.
    """

    NAME = "ava"
    TITLE = "AVA: a large-scale database for aesthetic visual analysis"
    HOMEPAGE = "https://github.com/imfing/ava_downloader"
    MOS_RANGE = (1.0, 10.0)
    HAS_STD = True
    OFFICIAL_SPLITS = ("train", "test")
    OFFICIAL_HINT = "the standard split needs aesthetics_image_lists/generic_test.jpgl"
    IMAGE_DIRS = ("images", "image", "AVA_dataset/images", "AVA_dataset/image")
    EXTRA_FEATURES = {
        "votes": datasets.List(_INT),
        "num_votes": _INT,
        "semantic_tag_ids": datasets.List(_INT),
        "semantic_tags": datasets.List(datasets.Value("string")),
        "challenge_id": _INT,
        "challenge": datasets.Value("string"),
    }
    _FOLDERS = ("", "AVA_dataset")

    def _locate(self):
        return {
            "ava": self.locate(*under(self._FOLDERS, "AVA.txt")),
            "tags": self.locate(*under(self._FOLDERS, "tags.txt"), required=False),
            "challenges": self.locate(*under(self._FOLDERS, "challenges.txt"), required=False),
            "test": self.locate(
                *under(self._FOLDERS, "aesthetics_image_lists/generic_test.jpgl", "generic_test.jpgl"), required=False
            ),
        }

    def _index(self):
        path = self.files["ava"]
        tags = read_id_names(self.files["tags"])
        challenges = read_id_names(self.files["challenges"])
        test = set()
        for _line, fields in read_tokens(self.files["test"]) if self.files["test"] else ():
            test.add(os.path.splitext(fields[0])[0])  # one id a line; "953619.jpg" is taken as 953619
        official = bool(self.files["test"])
        scores = range(1, 11)
        rows, ids = [], set()
        for line, fields in read_tokens(path):
            try:
                if len(fields) != 15:
                    raise ValueError
                values = [int(f) for f in fields]
            except ValueError:
                raise DatasetFormatError(
                    "expected 15 space-separated integers (index, image id, 10 vote counts, tag 1, tag 2, "
                    f"challenge), got {' '.join(fields)!r}",
                    path,
                    line,
                ) from None
            votes = values[2:12]
            total = sum(votes)
            if total <= 0 or min(votes) < 0:
                raise DatasetFormatError(f"the vote counts must be non-negative with a positive sum, got {votes}", path, line)
            mean = sum(s * c for s, c in zip(scores, votes)) / total
            std = math.sqrt(max(sum(c * (s - mean) ** 2 for s, c in zip(scores, votes)) / total, 0.0))
            tag_ids = [t for t in values[12:14] if t]
            image_id = fields[1]
            ids.add(image_id)
            rows.append(
                {
                    "image_name": f"{image_id}.jpg",
                    "mos": mean,
                    "std": std,
                    "votes": votes,
                    "num_votes": total,
                    "semantic_tag_ids": tag_ids,
                    "semantic_tags": [tags[t] for t in tag_ids if t in tags],
                    "challenge_id": values[14],
                    "challenge": challenges.get(values[14]),
                    "_split": ("test" if image_id in test else "train") if official else None,
                    "_line": line,
                }
            )
        if official:
            check_split_list(test, ids, self.files["test"], self.NAME)
        return rows, path


class AADB(AestheticsBuilder):
    """AADB (aesthetics score 0-1, higher is better), official train/validation/test.

    The test part is ``imgListTestNewRegression_score.txt`` (the 1,000-image set). Extras:
    the eleven attribute scores, named in snake case (``balancing_elements`` from the
    files' ``BalacingElements``, ``color_harmony``, ``content``, ``dof``, ``light``,
    ``motion_blur``, ``object``, ``repetition``, ``rule_of_thirds``, ``symmetry``,
    ``vivid_color``); ``None`` where a file is absent or does not list the image.
    """

    NAME = "aadb"
    TITLE = "AADB aesthetics and attributes database"
    HOMEPAGE = "https://www.ics.uci.edu/~skong2/aesthetics.html"
    MOS_RANGE = (0.0, 1.0)
    OFFICIAL_SPLITS = TRAIN_VAL_TEST
    IMAGE_DIRS = ("datasetImages_originalSize", "datasetImages_warp256", "images")
    ATTRIBUTES = {
        "BalacingElements": "balancing_elements",
        "ColorHarmony": "color_harmony",
        "Content": "content",
        "DoF": "dof",
        "Light": "light",
        "MotionBlur": "motion_blur",
        "Object": "object",
        "Repetition": "repetition",
        "RuleOfThirds": "rule_of_thirds",
        "Symmetry": "symmetry",
        "VividColor": "vivid_color",
    }
    EXTRA_FEATURES = {column: datasets.Value("float64") for column in ATTRIBUTES.values()}
    # split -> (score-file part, attribute-file parts in order of preference)
    _PARTS = {
        "train": ("Train", ("Train",)),
        "validation": ("Validation", ("Validation",)),
        "test": ("TestNew", ("TestNew", "Test")),
    }
    _FOLDERS = ("imgListFiles_label", "")

    def _locate(self):
        files = {}
        for split, (part, attr_parts) in self._PARTS.items():
            name = f"imgList{part}Regression_score.txt"
            files[split] = self.locate(*under(self._FOLDERS, name), required=split != "validation")
            for attribute in self.ATTRIBUTES:
                names = [f"imgList{p}Regression_{attribute}.txt" for p in attr_parts]
                files[f"{split}:{attribute}"] = self.locate(*under(self._FOLDERS, *names), required=False)
        return files

    def _index(self):
        rows: list[dict] = []
        for split in self._PARTS:
            path = self.files[split]
            if path is None:
                continue
            attributes = {}
            for attribute, column in self.ATTRIBUTES.items():
                attr_path = self.files[f"{split}:{attribute}"]
                attributes[column] = {n: v for _, n, v in read_pairs(attr_path)} if attr_path else {}
            for line, name, score in read_pairs(path):
                row = {"image_name": name, "mos": score, "_split": split, "_line": line, "_source": path}
                row.update({column: values.get(name) for column, values in attributes.items()})
                rows.append(row)
        return rows, self.files["train"]


class BAID(AestheticsBuilder):
    """BAID (artistic images; score 0-10, higher is better), official train/validation/test.

    The paper trains on train + validation (53,937 images) and tests on the 6,400 test
    images: concatenate ``ds["train"]`` and ``ds["validation"]`` for that.
    """

    NAME = "baid"
    TITLE = "BAID: Boldbrush Artistic Image Dataset"
    HOMEPAGE = "https://github.com/Dreemurr-T/BAID"
    MOS_RANGE = (0.0, 10.0)
    OFFICIAL_SPLITS = TRAIN_VAL_TEST
    IMAGE_DIRS = ("images", "dataset/images")
    _FILES = {"train": "train_set.csv", "validation": "val_set.csv", "test": "test_set.csv"}

    def _locate(self):
        return {
            split: self.locate(*under(("", "dataset"), name), required=split != "validation")
            for split, name in self._FILES.items()
        }

    def _index(self):
        rows = []
        for split in self._FILES:
            if self.files[split]:
                for row in table_rows(read_csv(self.files[split]), ("image", "image_name", "name"), ("score", "mos")):
                    row.update(_split=split, _source=self.files[split])
                    rows.append(row)
        return rows, os.path.dirname(self.files["train"])
