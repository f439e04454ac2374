"""UniQA columns on a `datasets.Dataset`: `score_dataset` and `uniqa score --dataset`."""

import logging

import pyarrow.parquet as pq
import pytest
from datasets import Dataset, DatasetDict, Image, load_from_disk

from modeling_uniqa.cli import main
from modeling_uniqa.scoring.score_datasets import DatasetScorer, score_dataset
from modeling_uniqa.scoring.score_images import UsageError
from modeling_uniqa.scoring.score_parquet import read_fingerprint, read_scores
from tests.curation_data import assert_scores_equal, curation_data  # noqa: F401 (fixture)

SCORES = ["score", "mos", "group_default", "group_sharpness", "group_noise", "group_quality"]


@pytest.fixture(scope="module")
def saved_dataset(curation_data, tmp_path_factory):  # noqa: F811
    """The curation images (bytes embedded) plus a file that is no image, saved to disk."""
    broken = curation_data.root / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    paths = [*curation_data.paths, str(broken)]
    dataset = Dataset.from_dict({"image": paths, "name": [p.rsplit("/", 1)[-1][:-4] for p in paths]}).cast_column("image", Image())
    folder = tmp_path_factory.mktemp("dataset") / "photos"
    DatasetDict({"train": dataset}).save_to_disk(str(folder))
    return str(folder)


def test_score_dataset_matches_uniqa_score(curation_data, saved_dataset):  # noqa: F811
    dataset = load_from_disk(saved_dataset)["train"]
    scored = score_dataset(dataset, curation_data.model, "image", map_batch_size=50, outputs=["score", "mos", "groups"], batch_size=200)
    assert scored.column_names == ["image", "name", *SCORES, "error"]
    rows = scored.remove_columns("image").to_list()
    for row in rows[:-1]:
        assert row["error"] is None
        assert_scores_equal(row, curation_data.reference[row["name"]], SCORES)
    assert rows[-1]["score"] is None and rows[-1]["error"] == "image[200]: not an image format PIL can read (20 bytes)."

    # batch-invariant: other map batches and forward sizes give the same scores
    again = score_dataset(dataset.select(range(7)), curation_data.model, "image", map_batch_size=3, outputs=["score"], batch_size=10)
    for row, first in zip(again.to_list(), rows):
        assert abs(row["score"] - first["score"]) <= 1e-6


def test_map_processes_and_column_clash(curation_data, saved_dataset):  # noqa: F811
    small = load_from_disk(saved_dataset)["train"].select(range(6))
    scored = score_dataset(small, curation_data.model, "image", num_proc=2, map_batch_size=2, column_prefix="uniqa_")
    reference = curation_data.reference
    for row in scored.remove_columns("image").to_list():
        assert_scores_equal({"score": row["uniqa_score"]}, reference[row["name"]], ["score"])
    with pytest.raises(UsageError, match="already has column.*uniqa_score"):
        score_dataset(scored, curation_data.model, "image", column_prefix="uniqa_")
    with pytest.raises(UsageError, match="'picture' is not in the dataset"):
        score_dataset(small, curation_data.model, "picture")
    assert DatasetScorer(curation_data.model).__getstate__()["_scorer"] is None  # the model is never pickled


def test_cli_dataset_to_parquet(curation_data, saved_dataset, tmp_path, caplog):  # noqa: F811
    caplog.set_level(logging.INFO)
    output = tmp_path / "scores.parquet"
    assert main(["score", "--dataset", saved_dataset, "--split", "train", "--image-column", "image", "--model", curation_data.model,
                 "--output", str(output), "--keep-columns", "name", "--batch-size", "200"]) == 0
    rows = pq.read_table(output).to_pylist()
    assert list(rows[0]) == ["index", "name", "score", "mos", "error"]
    assert [row["index"] for row in rows] == list(range(201))
    for row in rows[:-1]:
        assert_scores_equal(row, curation_data.reference[row["name"]], ["score", "mos"])
    assert rows[-1]["error"] and "1 failed" in caplog.text
    assert read_fingerprint(str(output))["columns"] == ["index", "score", "mos", "error"]
    assert read_scores(str(output)).num_rows == 201

    other = tmp_path / "other.parquet"
    other.write_text("not ours")
    assert main(["score", "--dataset", saved_dataset, "--model", curation_data.model, "--output", str(other)]) == 2
    assert "was not written by uniqa score" in caplog.text
    assert main(["score", "--dataset", saved_dataset, "--split", "test", "--model", curation_data.model, "--output", str(output)]) == 2
    assert "no split 'test'" in caplog.text


def test_cli_scores_a_rated_dataset_and_names_a_missing_image_column(saved_tiny_model, tmp_path, caplog):
    """A rating dataset has its own `mos` (and maybe `score`) column: the CLI's output keeps only
    `index`, --keep-columns and the scores, so it must not refuse (it raised a traceback)."""
    from PIL import Image as PILImage

    from tests.helpers import random_rgb

    paths = [str(tmp_path / f"{index}.png") for index in range(3)]
    for index, path in enumerate(paths):
        PILImage.fromarray(random_rgb(40, 48, seed=index)).save(path)
    rated = Dataset.from_dict({"image": paths, "mos": [1.0, 2.0, 3.0], "score": [0.1, 0.2, 0.3]}).cast_column("image", Image())
    rated.save_to_disk(str(tmp_path / "rated"))
    output = tmp_path / "scores.parquet"
    assert main(["score", "--dataset", str(tmp_path / "rated"), "--model", saved_tiny_model, "--output", str(output),
                 "--keep-columns", "mos", "--outputs", "score", "--workers", "0"]) == 0
    rows = pq.read_table(output).to_pylist()
    assert [list(row) for row in rows][0] == ["index", "mos", "score", "error"]
    assert [row["mos"] for row in rows] == [1.0, 2.0, 3.0] and all(0 < row["score"] < 1 and row["score"] not in (0.1, 0.2, 0.3) for row in rows)
    caplog.set_level(logging.ERROR)
    assert main(["score", "--dataset", str(tmp_path / "rated"), "--model", saved_tiny_model, "--output", str(output),
                 "--image-column", "picture"]) == 2
    assert "--image-column: picture not in the dataset" in caplog.text
    assert main(["score", "--dataset", str(tmp_path / "rated"), "--model", saved_tiny_model, "--output", str(output),
                 "--keep-columns", "score"]) == 2
    assert "--keep-columns score: the output has such columns already" in caplog.text
