import math

import numpy as np
import pytest
from PIL import Image, ImageFilter

from train_scripts.common.quality_report import Brisque, RatedImage, distortion_metrics, falling_pairs, markdown_table


def _items(noise_scores):
    """Two photos x two kinds x 3 levels; the 'model' follows the MOS, 'noisy' is given per item."""
    items, k = [], 0
    for photo in ("a", "b"):
        for kind, base in (("01", 4.5), ("11", 4.0)):
            for level in (1, 2, 3):
                mos = base - level + (0.2 if photo == "a" else 0.0)
                items.append(RatedImage(photo, kind, level, mos, {"model": mos, "noisy": noise_scores[k]}))
                k += 1
    return items


def test_metrics_per_kind_overall_and_falling_pairs():
    noisy = [3, 2, 1, 1, 2, 3, 3, 2, 1, 3, 2, 1]
    report = distortion_metrics(_items(noisy), ["model", "noisy"])
    assert report["model"]["overall"]["srcc"] == pytest.approx(1.0)
    assert report["model"]["overall"]["falling_pairs"] == 1.0
    assert report["model"]["kinds"]["01"]["n"] == 6
    # 'noisy' rises with the level for photo a's kind 11: 2 of 8 adjacent pairs do not fall
    assert falling_pairs(_items(noisy), "noisy") == (6, 8)
    assert report["noisy"]["kinds"]["11"]["falling_pairs"] == pytest.approx(0.5)
    table = markdown_table(report, {"01": "Gaussian blur"})
    assert "| Gaussian blur |" in table and "**overall**" in table and table.count("\n") == 4


def test_too_few_items_give_nan_not_an_error():
    items = [RatedImage("a", "01", level, 5.0 - level, {"m": float(level)}) for level in (1, 2)]
    report = distortion_metrics(items, ["m"])
    assert math.isnan(report["m"]["overall"]["srcc"]) and report["m"]["overall"]["falling_pairs"] == 0.0
    assert "n/a" in markdown_table(report)


def test_brisque_runs_on_numpy_2_and_prefers_the_sharp_photo():
    from skimage import data

    photo = Image.fromarray(data.astronaut()).resize((256, 256), Image.LANCZOS)
    brisque = Brisque()
    sharp = brisque.quality(np.asarray(photo))
    blurred = brisque.quality(np.asarray(photo.filter(ImageFilter.GaussianBlur(3))))
    assert math.isfinite(sharp) and sharp > blurred
