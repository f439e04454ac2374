"""Bad input: missing label files, malformed lines and cells, missing images."""

import logging
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import data_fixtures as fx  # noqa: E402

from data_builders import DatasetFormatError, MissingImageError, MissingLabelFileError  # noqa: E402

fx.quiet_datasets()


def test_missing_label_file_lists_the_expected_paths(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingLabelFileError) as error:
        fx.build("koniq10k", tmp_path / "empty", tmp_path)
    assert isinstance(error.value, FileNotFoundError)
    expected = [os.path.join(str(tmp_path / "empty"), n)
                for n in ("koniq10k_distributions_sets.csv", "koniq10k_scores_and_distributions.csv")]
    assert error.value.expected == expected and all(p in str(error.value) for p in expected)
    with pytest.raises(MissingLabelFileError, match=r"Data/AllImages_release\.mat"):
        fx.build("clive", tmp_path / "empty", tmp_path)
    with pytest.raises(MissingLabelFileError, match="does not exist"):
        fx.build("tid2013", tmp_path / "absent", tmp_path)


def test_malformed_csv_cell_names_file_and_line(tmp_path):
    fx.write_kadid(str(tmp_path / "kadid"))
    path = tmp_path / "kadid" / "dmos.csv"
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace(lines[2].split(",")[2], "abc")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=r"dmos\.csv, line 3: expected a number for column 'dmos', got 'abc'"):
        fx.build("kadid10k", tmp_path / "kadid", tmp_path)


def test_missing_column_names_the_expected_column(tmp_path):
    fx.write_kadid(str(tmp_path / "kadid"))
    path = tmp_path / "kadid" / "dmos.csv"
    path.write_text(path.read_text().replace("dmos,var", "quality,var", 1))
    with pytest.raises(DatasetFormatError, match=r"dmos\.csv, line 1: expected a column 'dmos'"):
        fx.build("kadid10k", tmp_path / "kadid", tmp_path)


def test_malformed_xlsx_cell_names_the_row(tmp_path):
    import openpyxl

    fx.write_csiq(str(tmp_path / "csiq"))
    path = str(tmp_path / "csiq" / "csiq.DMOS.xlsx")
    workbook = openpyxl.load_workbook(path)
    workbook["all_by_image"].cell(row=7, column=9, value="n/a")  # the dmos cell of the third row
    workbook.save(path)
    with pytest.raises(DatasetFormatError, match=r"csiq\.DMOS\.xlsx, line 7: expected a number for column 'dmos'"):
        fx.build("csiq", tmp_path / "csiq", tmp_path)


def test_malformed_text_line(tmp_path):
    fx.write_tid2013(str(tmp_path / "tid"))
    path = tmp_path / "tid" / "mos_with_names.txt"
    lines = path.read_text().splitlines()
    lines[3] = "4.2 reference.bmp"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=r"mos_with_names\.txt, line 4: expected an image name like"):
        fx.build("tid2013", tmp_path / "tid", tmp_path)
    lines[3] = "4.2"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=r"line 4: expected at least 2"):
        fx.build("tid2013", tmp_path / "tid", tmp_path)


def test_mat_file_with_wrong_length_or_variable(tmp_path):
    import scipy.io

    fx.write_clive(str(tmp_path / "clive"))
    mos = str(tmp_path / "clive" / "Data" / "AllMOS_release.mat")
    scipy.io.savemat(mos, {"AllMOS_release": np.ones((1, 5))})
    with pytest.raises(DatasetFormatError, match="AllMOS_release has 5 entries, expected 27"):
        fx.build("clive", tmp_path / "clive", tmp_path)
    scipy.io.savemat(mos, {"something_else": np.ones((1, 27))})
    with pytest.raises(DatasetFormatError, match="expected a variable 'AllMOS_release'"):
        fx.build("clive", tmp_path / "clive", tmp_path)


def test_negative_standard_deviation_names_file_and_line(tmp_path):
    fx.write_kadid(str(tmp_path / "kadid"))
    path = tmp_path / "kadid" / "dmos.csv"
    lines = path.read_text().splitlines()
    lines[3] = ",".join(lines[3].split(",")[:3] + ["-0.2"])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=r"dmos\.csv, line 4: the standard deviation of .* must be >= 0, got -0.2"):
        fx.build("kadid10k", tmp_path / "kadid", tmp_path)


def test_duplicate_image_is_an_error(tmp_path):
    fx.write_baid(str(tmp_path / "baid"))
    path = tmp_path / "baid" / "test_set.csv"
    path.write_text(path.read_text() + "0.jpg,5.0\n")
    with pytest.raises(DatasetFormatError, match="'0.jpg' is listed twice"):
        fx.build("baid", tmp_path / "baid", tmp_path)


def test_missing_images_are_skipped_with_a_count_or_rejected(tmp_path, caplog):
    fx.write_agiqa(str(tmp_path / "agiqa"))
    for name in ("glide_normal_003.jpg", "xl2.2_normal_004.jpg"):
        os.remove(tmp_path / "agiqa" / name)
    with caplog.at_level(logging.WARNING, logger="data_builders"):
        ds = fx.build("agiqa3k", tmp_path / "agiqa", tmp_path, split_scheme="full")
    assert ds["full"].num_rows == 13
    assert "2 of 15 images" in caplog.text and "glide_normal_003.jpg, xl2.2_normal_004.jpg" in caplog.text
    with pytest.raises(MissingImageError) as error:
        fx.build("agiqa3k", tmp_path / "agiqa", tmp_path, strict=True)
    assert error.value.missing == ["glide_normal_003.jpg", "xl2.2_normal_004.jpg"]


def test_no_image_found_suggests_image_dir(tmp_path):
    fx.write_flive(str(tmp_path / "flive"))
    os.rename(tmp_path / "flive" / "database", tmp_path / "flive" / "somewhere")
    with pytest.raises(MissingLabelFileError):
        fx.build("flive", tmp_path / "flive", tmp_path)
    fx.write_baid(str(tmp_path / "baid"))
    os.rename(tmp_path / "baid" / "images", tmp_path / "baid" / "pictures")
    with pytest.raises(MissingImageError, match="pass image_dir="):
        fx.build("baid", tmp_path / "baid", tmp_path)
    assert fx.build("baid", tmp_path / "baid", tmp_path, image_dir="pictures")["test"].num_rows == 5
    with pytest.raises(MissingLabelFileError, match="image_dir is not a folder"):
        fx.build("baid", tmp_path / "baid", tmp_path, image_dir="nowhere")


def test_a_split_without_any_image_on_disk_is_left_out(tmp_path, caplog):
    info = fx.write_baid(str(tmp_path / "baid"))
    for name in info["test"]:
        os.remove(tmp_path / "baid" / "images" / name)
    with caplog.at_level(logging.WARNING, logger="data_builders"):
        ds = fx.build("baid", tmp_path / "baid", tmp_path)
    assert list(ds) == ["train", "validation"]
    assert "5 of 20 images" in caplog.text and "no image of split 'test'" in caplog.text
