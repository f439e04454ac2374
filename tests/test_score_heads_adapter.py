"""`--heads` and `--adapter` on every path of `uniqa score` that goes through `ImageScorer`: tar
shards, `--dataset` and the Ray scorer give the files path's per-head scores, and a shard output
made with another adapter or other heads is refused."""

import json
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
from datasets import Dataset, DatasetDict, Image, load_from_disk

from modeling_uniqa import UniQAModel
from modeling_uniqa.cli import main
from modeling_uniqa.core.adapter_io import save_adapter
from modeling_uniqa.scoring.ray_scorer import UniQAScorer
from modeling_uniqa.scoring.score_datasets import score_dataset
from modeling_uniqa.scoring.score_parquet import read_fingerprint
from tests.curation_data import read_csv_scores, write_jpegs, write_shard
from tests.helpers import head_on_backbone, save_tiny_uniqa

HEADS = ["--heads", "default,aesthetics", "--outputs", "score,mos"]
COLUMNS = ["score", "mos", "aesthetics", "aesthetics_mos"]
OPTIONS = ["--workers", "0", "--batch-size", "20"]


def stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def assert_same_scores(rows: list, reference: dict, key: str) -> None:
    """Each row's scores equal the files path's for its image: 1e-6 (MOS: 1e-6 of a 0-100 range)."""
    assert sorted(row[key] for row in rows) == sorted(reference)
    for row in rows:
        for column in COLUMNS:
            tolerance = 1e-4 if column.endswith("mos") else 1e-6
            assert abs(row[column] - float(reference[row[key]][column])) <= tolerance, (column, row, reference[row[key]])


@pytest.fixture(scope="module")
def scored(tmp_path_factory, tiny_tokenizer):
    """A model with three heads (default, aesthetics, sharpness), an adapter fine-tuned on its
    backbone, 6 JPEGs as files, as one tar shard and as a saved dataset, and the files path's
    scores of them with `HEADS`, without (`plain`) and with the adapter (`adapted`)."""
    root = tmp_path_factory.mktemp("heads_adapter")
    model_dir = save_tiny_uniqa(root / "model", tiny_tokenizer, seed=0, mos_range=[0, 100])
    base = UniQAModel.from_pretrained(model_dir).eval()
    head_on_backbone(tiny_tokenizer, base, seed=3, task="aesthetics", mos_range=[1, 10]).save_pretrained(root / "ava")
    assert main(["heads", "add", model_dir, "--from", str(root / "ava"), "--name", "aesthetics"]) == 0
    assert main(["heads", "add", model_dir, "--prompts", "sharpness", "--name", "sharpness"]) == 0
    adapter_dir = str(save_adapter(head_on_backbone(tiny_tokenizer, base, seed=4, mos_range=[1, 5]), root / "adapter"))

    paths = write_jpegs(str(root / "images"), 6)
    os.makedirs(root / "shards")
    shard = str(root / "shards" / "00000.tar")
    write_shard(shard, [(stem(path), open(path, "rb").read()) for path in paths])  # noqa: SIM115
    dataset = Dataset.from_dict({"image": paths, "name": [stem(path) for path in paths]}).cast_column("image", Image())
    DatasetDict({"train": dataset}).save_to_disk(str(root / "dataset"))

    def files_path(name: str, *options) -> dict:
        output = str(root / f"{name}.csv")
        assert main(["score", str(root / "images"), "--model", model_dir, "--output", output, *HEADS, *OPTIONS, *options]) == 0
        with open(output + ".meta.json") as handle:
            fingerprint = json.load(handle)["fingerprint"]
        return SimpleNamespace(scores=read_csv_scores(output), fingerprint=fingerprint)

    return SimpleNamespace(model=model_dir, adapter=adapter_dir, tokenizer=tiny_tokenizer, paths=paths, shard=shard, dataset=str(root / "dataset"),
                           plain=files_path("plain"), adapted=files_path("adapted", "--adapter", adapter_dir))


def test_files_path_reference_is_meaningful(scored):
    """The adapter changes the default head's scores only; the heads' columns differ."""
    plain, adapted = scored.plain.scores, scored.adapted.scores
    assert list(next(iter(plain.values()))) == ["path", *COLUMNS, "error"]
    assert max(abs(float(plain[key]["score"]) - float(adapted[key]["score"])) for key in plain) > 1e-3
    assert max(abs(float(plain[key]["score"]) - float(plain[key]["aesthetics"])) for key in plain) > 1e-3
    for key in plain:
        assert float(plain[key]["aesthetics"]) == pytest.approx(float(adapted[key]["aesthetics"]), abs=1e-6)


def test_shards_with_heads_and_adapter(scored, tmp_path, caplog):
    def score_shard(output, *options):
        return main(["score", scored.shard, "--model", scored.model, "--output", str(output), *OPTIONS, *options])

    for name, reference, options in (("plain", scored.plain, []), ("adapted", scored.adapted, ["--adapter", scored.adapter])):
        output = tmp_path / name
        assert score_shard(output, *HEADS, *options) == 0
        rows = pq.read_table(output / "00000.parquet").to_pylist()
        assert list(rows[0]) == ["key", *COLUMNS, "error"]
        assert_same_scores(rows, reference.scores, "key")
        # what the files path records about heads and adapter, the shard's fingerprint records too
        fingerprint = read_fingerprint(str(output / "00000.parquet"))
        assert fingerprint["columns"] == ["key", *COLUMNS, "error"]
        assert fingerprint == reference.fingerprint | {"columns": fingerprint["columns"]}

    before = os.stat(tmp_path / "plain" / "00000.parquet").st_mtime_ns
    assert score_shard(tmp_path / "plain", *HEADS, "--adapter", scored.adapter) == 2
    assert "00000.parquet: made by another scorer (head_sha256: was" in caplog.text
    assert score_shard(tmp_path / "plain", "--heads", "default", "--outputs", "score,mos") == 2
    assert "made by another scorer (columns: was" in caplog.text
    assert os.stat(tmp_path / "plain" / "00000.parquet").st_mtime_ns == before
    assert score_shard(tmp_path / "nope", "--heads", "default,nope") == 2
    assert "--heads: this model has no head 'nope'; its heads: default, aesthetics, sharpness." in caplog.text
    assert not os.path.exists(tmp_path / "nope" / "00000.parquet")


def test_dataset_with_heads_and_adapter(scored, tmp_path, caplog):
    def score_dataset_cli(output, *options):
        return main(["score", "--dataset", scored.dataset, "--model", scored.model, "--output", str(output), "--keep-columns", "name",
                     *OPTIONS, *options])

    for name, reference, options in (("plain", scored.plain, []), ("adapted", scored.adapted, ["--adapter", scored.adapter])):
        output = tmp_path / f"{name}.parquet"
        assert score_dataset_cli(output, *HEADS, *options) == 0
        rows = pq.read_table(output).to_pylist()
        assert list(rows[0]) == ["index", "name", *COLUMNS, "error"]
        assert_same_scores(rows, reference.scores, "name")
        assert read_fingerprint(str(output))["head_sha256"] == reference.fingerprint["head_sha256"]
    assert score_dataset_cli(tmp_path / "nope.parquet", "--heads", "nope") == 2
    assert "--heads: this model has no head 'nope'" in caplog.text
    assert not os.path.exists(tmp_path / "nope.parquet")


def test_dataset_scores_follow_an_adapter_replaced_in_place(scored, tmp_path):
    """`datasets` caches a map under the function's hash, which holds the adapter's path: the
    cache must follow the weights, or a retrained adapter would get the old scores back."""
    adapter = tmp_path / "adapter"
    shutil.copytree(scored.adapter, adapter)
    dataset = load_from_disk(scored.dataset)["train"]
    first = score_dataset(dataset, scored.model, outputs=["score"], adapter=str(adapter))["score"]
    assert first == pytest.approx([float(scored.adapted.scores[stem(path)]["score"]) for path in scored.paths], abs=1e-6)
    shutil.rmtree(adapter)
    retrained = head_on_backbone(scored.tokenizer, UniQAModel.from_pretrained(scored.model), seed=5, mos_range=[1, 5])
    save_adapter(retrained, adapter)
    again = score_dataset(load_from_disk(scored.dataset)["train"], scored.model, outputs=["score"], adapter=str(adapter))["score"]
    assert max(abs(a - b) for a, b in zip(first, again)) > 1e-3
    assert score_dataset(dataset, scored.model, outputs=["score"], adapter=str(adapter))["score"] == again


def test_columns_that_would_clash_are_refused(scored, tmp_path, caplog):
    """A head named like the key column (`key` for shards), or a kept json field named like a
    score column, would overwrite it in every row: refused before any image is read."""
    model_dir = str(tmp_path / "model")
    shutil.copytree(scored.model, model_dir)
    assert main(["heads", "add", model_dir, "--prompts", "sharpness", "--name", "key"]) == 0

    def score_shard(name, *options):
        return main(["score", scored.shard, "--model", model_dir, "--output", str(tmp_path / name), *OPTIONS, *options])

    assert score_shard("all") == 2
    assert "head 'key' writes a column 'key', the name of the key column here; leave it out with --heads" in caplog.text
    assert not os.path.exists(tmp_path / "all" / "00000.parquet")
    assert score_shard("some", "--heads", "default,aesthetics", "--keep-columns", "url,aesthetics") == 2
    assert "--keep-columns aesthetics: the output has such columns already" in caplog.text
    assert score_shard("some", "--heads", "default", "--keep-columns", "url") == 0
    assert list(pq.read_table(tmp_path / "some" / "00000.parquet").column_names) == ["key", "url", "score", "mos", "error"]


def test_ray_scorer_with_heads_and_adapter(scored):
    batch = {"jpg": np.array([open(path, "rb").read() for path in scored.paths], dtype=object),  # noqa: SIM115
             "key": np.array([stem(path) for path in scored.paths])}
    scorer = UniQAScorer(scored.model, image_column="jpg", key_column="key", outputs=["score", "mos"], heads=["default", "aesthetics"],
                         adapter=scored.adapter, batch_size=20)
    out = scorer(batch)
    rows = [{"key": key} | {column: out[column][index] for column in COLUMNS} for index, key in enumerate(batch["key"])]
    assert_same_scores(rows, scored.adapted.scores, "key")
    assert "sharpness" not in out
