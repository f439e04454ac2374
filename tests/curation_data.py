"""Generated data for the curation-scale paths: small JPEGs in a folder, the same bytes in
img2dataset-style WebDataset tar shards, and the scores `uniqa score` gives the folder."""

import csv
import io
import json
import os
import tarfile
from types import SimpleNamespace

import pytest
from PIL import Image

from modeling_uniqa.cli import main
from tests.helpers import random_rgb


def write_jpegs(folder: str, count: int, size: int = 32) -> list:
    """`count` JPEGs `000000.jpg`... (size x size+0..7 pixels, so crops differ); their paths, sorted."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for index in range(count):
        path = os.path.join(folder, f"{index:06d}.jpg")
        Image.fromarray(random_rgb(size, size + index % 8, seed=index)).save(path, quality=90)
        paths.append(path)
    return paths


def sample_meta(key: str) -> dict:
    return {"url": f"https://example.com/{key}.jpg", "caption": f"photo {key}", "key": key, "status": "success"}


def write_shard(path: str, samples: list) -> None:
    """A tar of `(key, image bytes)` samples: `<key>.jpg`, `<key>.json`, `<key>.txt` each, as img2dataset writes."""
    with tarfile.open(path, "w") as archive:
        for key, data in samples:
            meta = sample_meta(key)
            for name, payload in ((f"{key}.jpg", data), (f"{key}.json", json.dumps(meta).encode()), (f"{key}.txt", meta["caption"].encode())):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                archive.addfile(info, io.BytesIO(payload))


def write_shards(folder: str, paths: list, corrupt_key: str, truncate_shard: int, count: int = 3) -> list:
    """The images of `paths` (keys = file stems) dealt into `count` shards in order. The sample
    `corrupt_key` gets bytes that are no image; shard `truncate_shard` is cut in the middle of
    its second half. Returns the shard paths and, per shard, the keys of its whole samples."""
    os.makedirs(folder, exist_ok=True)
    per_shard = -(-len(paths) // count)
    shards, keys = [], []
    for shard in range(count):
        chunk = paths[shard * per_shard : (shard + 1) * per_shard]
        samples = []
        for path in chunk:
            key = os.path.splitext(os.path.basename(path))[0]
            with open(path, "rb") as handle:
                data = handle.read()
            samples.append((key, b"not a jpeg at all" if key == corrupt_key else data))
        shard_path = os.path.join(folder, f"{shard:05d}.tar")
        write_shard(shard_path, samples)
        shards.append(shard_path)
        keys.append([key for key, _ in samples])
    with open(shards[truncate_shard], "rb+") as handle:  # cut mid-archive, inside a member's data
        size = os.path.getsize(shards[truncate_shard])
        handle.truncate(size * 3 // 4 + 100)
    return shards, keys


def read_csv_scores(path: str) -> dict:
    """`uniqa score` CSV -> {file stem: row}."""
    with open(path, newline="") as handle:
        return {os.path.splitext(os.path.basename(row["path"]))[0]: row for row in csv.DictReader(handle)}


CURATION_IMAGES = 200
CORRUPT_KEY = "000010"  # in shard 0
TRUNCATED_SHARD = 2


@pytest.fixture(scope="session")
def curation_data(tmp_path_factory, saved_tiny_model):
    """200 JPEGs, the same bytes in 3 tar shards (one corrupt member, shard 2 cut short), and
    `uniqa score`'s CSV of the folder (score, mos, groups), made once per session."""
    root = tmp_path_factory.mktemp("curation")
    paths = write_jpegs(str(root / "images"), CURATION_IMAGES)
    shards, keys = write_shards(str(root / "shards"), paths, CORRUPT_KEY, TRUNCATED_SHARD)
    reference = root / "reference.csv"
    code = main(["score", str(root / "images"), "--model", saved_tiny_model, "--output", str(reference),
                 "--outputs", "score,mos,groups", "--batch-size", "200", "--workers", "0"])
    assert code == 0
    return SimpleNamespace(root=root, paths=paths, shards=shards, keys=keys, reference=read_csv_scores(str(reference)), model=saved_tiny_model)


def assert_scores_equal(row: dict, reference: dict, columns: list) -> None:
    """Scores of one image by another path equal `uniqa score`'s: 1e-6 (mos: 1e-6 of its 0-100 range)."""
    for column in columns:
        tolerance = 1e-4 if column == "mos" else 1e-6
        assert abs(float(row[column]) - float(reference[column])) <= tolerance, (column, row, reference)
