"""`UniQAScorer`: called on batch dicts directly, and as a Ray Data `map_batches` stage in local mode."""

import numpy as np
import pandas as pd
import pytest

from modeling_uniqa.scoring.ray_scorer import UniQAScorer
from modeling_uniqa.scoring.score_parquet import FINGERPRINT_COLUMN, MixedScoresError, read_scores
from tests.curation_data import assert_scores_equal, curation_data  # noqa: F401 (fixture)


def key_of(path):
    return path.rsplit("/", 1)[-1][:-4]


def test_scorer_on_a_numpy_batch(curation_data, tmp_path):  # noqa: F811
    paths = curation_data.paths[:12]
    blobs = [open(path, "rb").read() for path in paths]  # noqa: SIM115
    batch = {"jpg": np.array(blobs + [b"junk"], dtype=object), "key": np.array([key_of(p) for p in paths] + ["junk"])}
    scorer = UniQAScorer(curation_data.model, image_column="jpg", key_column="key", outputs=["score", "mos", "groups"], batch_size=40)
    out = scorer(batch)
    for index, path in enumerate(paths):
        row = {column: out[column][index] for column in ("score", "mos", "group_noise")}
        assert_scores_equal(row, curation_data.reference[key_of(path)], list(row))
    assert out["score"][-1] is None and out["error"][-1] == "junk: not an image format PIL can read (4 bytes)."
    assert set(out[FINGERPRINT_COLUMN]) == {scorer.fingerprint_id}

    arrays = [np.full((40, 40, 3), np.nan, np.float32), np.zeros((2, 900, 3), np.uint8)]  # arrays, as read_images gives
    bad = UniQAScorer(curation_data.model, outputs=["score"])({"image": arrays})
    assert bad["error"][0] == "image[0]: the float pixels hold NaN or infinite values."  # named once, by its cell
    assert bad["error"][1].startswith("image[1]: 900x2 pixels, an aspect ratio of 450:1")

    frame = pd.DataFrame({"image": [{"bytes": blobs[0], "path": None}, None]})  # `datasets` cells, pandas batches
    scored = UniQAScorer(curation_data.model, column_prefix="uniqa_")(frame)
    assert_scores_equal({"score": scored["uniqa_score"][0]}, curation_data.reference[key_of(paths[0])], ["score"])
    assert scored["uniqa_error"][1] == "image[1]: no image (empty cell)."
    with pytest.raises(KeyError, match="no column 'picture'"):
        UniQAScorer(curation_data.model, image_column="picture")(frame)

    # rows written by any Parquet writer carry the fingerprint: read_scores refuses mixed ones
    pd.DataFrame({"score": out["score"], FINGERPRINT_COLUMN: out[FINGERPRINT_COLUMN]}).to_parquet(tmp_path / "a.parquet")
    pd.DataFrame({"score": [0.5], FINGERPRINT_COLUMN: ["another scorer"]}).to_parquet(tmp_path / "b.parquet")
    assert read_scores(str(tmp_path / "a.parquet")).num_rows == 13
    with pytest.raises(MixedScoresError, match="b.parquet: made by another scorer"):
        read_scores(str(tmp_path))


def test_ray_data_local_mode(curation_data, tmp_path):  # noqa: F811
    ray = pytest.importorskip("ray")  # the `ray` extra; CI installs it with `test`
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        paths = curation_data.paths[:40]
        dataset = ray.data.from_items([{"key": key_of(path), "jpg": open(path, "rb").read()} for path in paths])  # noqa: SIM115
        scored = dataset.map_batches(
            UniQAScorer, fn_constructor_kwargs={"model_dir": curation_data.model, "image_column": "jpg", "key_column": "key", "batch_size": 200},
            concurrency=1, num_cpus=1, batch_size=16,
        )
        scored.drop_columns(["jpg"]).write_parquet(str(tmp_path / "out"))
    finally:
        ray.shutdown()
    table = read_scores(str(tmp_path / "out")).to_pylist()
    assert sorted(row["key"] for row in table) == sorted(map(key_of, paths))
    for row in table:
        assert row["error"] is None
        assert_scores_equal(row, curation_data.reference[row["key"]], ["score", "mos"])
