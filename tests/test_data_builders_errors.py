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


def _edit_line(path, index, edit):
    lines = path.read_text().splitlines()
    lines[index] = edit(lines[index])
    path.write_text("\n".join(lines) + "\n")


def _kadid_dmos(value):
    return lambda line: ",".join(line.split(",")[:2] + [value] + line.split(",")[3:])


def _clive_mos(value):
    def corrupt(root):
        import scipy.io

        path = root / "Data" / "AllMOS_release.mat"
        mos = scipy.io.loadmat(str(path))["AllMOS_release"]
        mos[0, 10] = value  # entry 11: the image '13.bmp' (the first 7 are dropped)
        scipy.io.savemat(str(path), {"AllMOS_release": mos})

    return corrupt


@pytest.mark.parametrize(
    "name, write, corrupt, message",
    [
        ("kadid10k", fx.write_kadid, lambda root: _edit_line(root / "dmos.csv", 2, _kadid_dmos("inf")),
         r"dmos\.csv, line 3: expected a finite number for column 'dmos', got 'inf'"),
        ("kadid10k", fx.write_kadid, lambda root: _edit_line(root / "dmos.csv", 2, _kadid_dmos("-1e999")),
         r"dmos\.csv, line 3: expected a finite number for column 'dmos', got '-1e999'"),
        ("clive", fx.write_clive, _clive_mos(np.nan),
         r"AllImages_release\.mat, line 11: the MOS of '13\.bmp' must be a finite number, got nan"),
        ("clive", fx.write_clive, _clive_mos(np.inf), r"the MOS of '13\.bmp' must be a finite number, got inf"),
    ],
    ids=["csv-inf", "csv-overflow", "mat-nan", "mat-inf"],
)
def test_non_finite_mos_is_an_error_not_a_nan_or_clipped_score(tmp_path, name, write, corrupt, message):
    write(str(tmp_path / "data"))
    corrupt(tmp_path / "data")
    with pytest.raises(DatasetFormatError, match=message):
        fx.build(name, tmp_path / "data", tmp_path)


@pytest.mark.parametrize(
    "name, write, label, text",
    [
        ("tid2013", fx.write_tid2013, "mos_with_names.txt", "\n\n"),
        ("ava", fx.write_ava, "AVA.txt", ""),
        ("aadb", fx.write_aadb, "imgListFiles_label/imgListTrainRegression_score.txt", ""),
    ],
)
def test_an_empty_label_file_is_an_error_not_an_empty_dataset(tmp_path, name, write, label, text):
    write(str(tmp_path / "data"))
    for other in ("mos_std.txt", "imgListFiles_label/imgListValidationRegression_score.txt",
                  "imgListFiles_label/imgListTestNewRegression_score.txt"):
        if (tmp_path / "data" / other).exists():
            (tmp_path / "data" / other).write_text("")
    (tmp_path / "data" / label).write_text(text)
    with pytest.raises(DatasetFormatError, match=r"no ratings found"):
        fx.build(name, tmp_path / "data", tmp_path)


@pytest.mark.parametrize("counts", [["-3", "4", "5", "6", "7"], ["0", "0", "0", "0", "0"]])
def test_koniq_vote_counts_must_be_non_negative_with_votes(tmp_path, counts):
    fx.write_koniq(str(tmp_path / "koniq"), sets=False)
    path = tmp_path / "koniq" / "koniq10k_scores_and_distributions.csv"
    _edit_line(path, 2, lambda line: ",".join(line.split(",")[:1] + counts + line.split(",")[6:]))
    with pytest.raises(DatasetFormatError, match=r"scores_and_distributions\.csv, line 3: the vote counts c1\.\.c5"):
        fx.build("koniq10k", tmp_path / "koniq", tmp_path)


@pytest.mark.parametrize("header", ["DMOS", "dmos_realigned"])
def test_folder_csv_dmos_column_needs_the_score_direction(tmp_path, header):
    fx.write_folder_csv(str(tmp_path / "uw"))
    path = tmp_path / "uw" / "labels.csv"
    path.write_text(path.read_text().replace("file_name,MOS", f"file_name,{header}", 1))
    with pytest.raises(DatasetFormatError, match=rf"labels\.csv, line 1: the score column '{header}' looks like a DMOS"):
        fx.build("folder_csv", tmp_path / "uw", tmp_path, mos_column=None if header == "DMOS" else header)
    ds = fx.build("folder_csv", tmp_path / "uw", tmp_path, higher_is_better=False, mos_range=(0, 10),
                  mos_column=None if header == "DMOS" else header)
    fx.assert_scores(ds, (0, 10), False)


@pytest.mark.parametrize(
    "name, write, label, line, message",
    [
        # TID2013's list and disk differ in letter case, so these two rows are one file
        ("tid2013", fx.write_tid2013, "mos_with_names.txt", "1.0 i01_01_1.bmp",
         r"mos_with_names\.txt, line 31: 'I01_01_1\.bmp' \(line 1\) and 'i01_01_1\.bmp' \(line 31\) name the same image"),
        # a folder prefix in another split's file: the same image in train and test
        ("baid", fx.write_baid, "test_set.csv", "images/0.jpg,5.0",
         r"test_set\.csv, line 7: '0\.jpg' \(line 2 of .*train_set\.csv\) and 'images/0\.jpg' \(line 7\)"),
    ],
    ids=["letter-case", "folder-prefix"],
)
def test_two_rows_naming_one_image_are_an_error(tmp_path, name, write, label, line, message):
    write(str(tmp_path / "data"))
    (tmp_path / "data" / "mos_std.txt").unlink(missing_ok=True)
    with open(tmp_path / "data" / label, "a") as handle:
        handle.write(line + "\n")
    with pytest.raises(DatasetFormatError, match=message):
        fx.build(name, tmp_path / "data", tmp_path, split_scheme="full" if name == "tid2013" else "auto")


def test_a_duplicate_across_split_files_names_both_files(tmp_path):
    fx.write_baid(str(tmp_path / "baid"))
    with open(tmp_path / "baid" / "test_set.csv", "a") as handle:
        handle.write("0.jpg,5.0\n")
    with pytest.raises(DatasetFormatError, match=r"test_set\.csv, line 7: image '0\.jpg' is listed twice \(line 2 of .*train_set\.csv"):
        fx.build("baid", tmp_path / "baid", tmp_path)


def test_ava_test_list_must_match_the_labels(tmp_path, caplog):
    info = fx.write_ava(str(tmp_path / "ava"), missing=0, corrupt=0)
    listing = tmp_path / "ava" / "aesthetics_image_lists" / "generic_test.jpgl"
    listing.write_text("1\n2\n3\n")  # another release's ids: every test image would silently be trained on
    with pytest.raises(DatasetFormatError, match=r"generic_test\.jpgl: none of its 3 names is in the label file"):
        fx.build("ava", tmp_path / "ava", tmp_path)
    listing.write_text("".join(f"{i}.jpg\n" for i in info["test"]) + "404\n")  # ids as file names, one unknown
    with caplog.at_level(logging.WARNING, logger="data_builders"):
        ds = fx.build("ava", tmp_path / "ava", tmp_path)
    assert sorted(ds["test"]["image_name"]) == sorted(f"{i}.jpg" for i in info["test"])
    assert "1 of the 7 names in" in caplog.text and "404" in caplog.text


def test_flive_split_files_match_names_as_images_are_found(tmp_path):
    info = fx.write_flive(str(tmp_path / "flive"))
    test_file = tmp_path / "flive" / "database" / "labels640.csv"
    text = test_file.read_text()
    for name in info["test"]:
        text = text.replace(name, name.upper().replace("/", "\\"))
    test_file.write_text(text)
    ds = fx.build("flive", tmp_path / "flive", tmp_path)
    assert fx.split_names(ds)["test"] == info["test"]
    valid_file = tmp_path / "flive" / "database" / "labels=640_padded.csv"
    valid_file.write_text(valid_file.read_text().replace("True", "yes"))
    with pytest.raises(DatasetFormatError, match=r"labels=640_padded\.csv, line 2: expected is_valid True or False, got 'yes'"):
        fx.build("flive", tmp_path / "flive", tmp_path)


def _bom_crlf(path):
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n") + b"\r\n\r\n")


@pytest.mark.parametrize(
    "name, write, labels",
    [
        ("kadid10k", fx.write_kadid, ["dmos.csv"]),
        ("tid2013", fx.write_tid2013, ["mos_with_names.txt", "mos_std.txt"]),
        ("ava", fx.write_ava, ["AVA.txt", "tags.txt", "challenges.txt", "aesthetics_image_lists/generic_test.jpgl"]),
    ],
)
def test_bom_crlf_and_trailing_blank_lines_read_as_plain_files(tmp_path, name, write, labels):
    write(str(tmp_path / "plain"))
    write(str(tmp_path / "windows"))
    for label in labels:
        _bom_crlf(tmp_path / "windows" / label)
    plain = fx.build(name, tmp_path / "plain", tmp_path)
    windows = fx.build(name, tmp_path / "windows", tmp_path)
    columns = [c for c in plain["test"].column_names if c not in ("image", "image_path")]
    for split in plain:
        assert windows[split].select_columns(columns).to_list() == plain[split].select_columns(columns).to_list()


def test_windows_1252_text_is_decoded_not_replaced(tmp_path, caplog):
    fx.write_agiqa(str(tmp_path / "agiqa"))
    path = tmp_path / "agiqa" / "data.csv"
    path.write_bytes(path.read_text().replace("a cat, on a mat, number 0", "caf\u00e9 \u201ccat\u201d").encode("cp1252"))
    with caplog.at_level(logging.WARNING, logger="data_builders"):
        ds = fx.build("agiqa3k", tmp_path / "agiqa", tmp_path, split_scheme="full")
    assert ds["full"]["prompt"][0] == "caf\u00e9 \u201ccat\u201d" and "\ufffd" not in "".join(ds["full"]["prompt"])
    assert "1 lines are not UTF-8 and were read as Windows-1252 (lines 2)" in caplog.text
