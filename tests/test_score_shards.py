"""`uniqa score` on WebDataset tar shards: scores, error rows, skipping done shards, resume, refusal of mixed scorers."""

import glob
import io
import os
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from modeling_uniqa.cli import main
from modeling_uniqa.scoring import score_shards
from modeling_uniqa.scoring.score_parquet import MixedScoresError, read_fingerprint, read_scores
from modeling_uniqa.scoring.score_shards import expand_braces, iter_samples
from tests.curation_data import CORRUPT_KEY, assert_scores_equal, curation_data, write_jpegs, write_shard  # noqa: F401 (fixture)
from tests.helpers import launch_two_processes

SCORES = ["score", "mos", "group_default", "group_sharpness", "group_noise", "group_quality"]


def score_tars(data, output, *options, workers=1):
    """`uniqa score` on the 3 shards. One worker reads whole shards; two (more than 3/4 of a
    shard each) both stream every shard and decode every other sample."""
    pattern = os.path.join(os.path.dirname(data.shards[0]), "{00000..00002}.tar")
    return main(["score", pattern, "--model", data.model, "--output", str(output), "--outputs", "score,mos,groups",
                 "--workers", str(workers), "--batch-size", "200", *options])


def test_expand_braces():
    assert expand_braces("s/{00000..00002}.tar") == ["s/00000.tar", "s/00001.tar", "s/00002.tar"]
    assert expand_braces("{8..10}-{a,b}") == ["8-a", "8-b", "9-a", "9-b", "10-a", "10-b"]
    assert expand_braces("{3..1}") == ["3", "2", "1"]
    assert expand_braces("x{}{y}.tar") == ["x{}{y}.tar"]  # no range, no list: left as it is


def test_shards_match_uniqa_score_with_error_rows(curation_data, tmp_path):  # noqa: F811
    output = tmp_path / "scores"
    assert score_tars(curation_data, output, "--keep-columns", "url,caption", workers=2) == 0
    files = sorted(glob.glob(str(output / "*.parquet")))
    assert [os.path.basename(path) for path in files] == ["00000.parquet", "00001.parquet", "00002.parquet"]
    tables = [pq.read_table(path).to_pylist() for path in files]
    assert list(tables[0][0]) == ["key", "url", "caption", *SCORES, "error"]
    assert [row["key"] for row in tables[0]] == curation_data.keys[0]  # tar order, each key once
    assert [row["key"] for row in tables[1]] == curation_data.keys[1]

    corrupt = next(row for row in tables[0] if row["key"] == CORRUPT_KEY)
    assert corrupt["score"] is None and corrupt["error"].endswith("00000.tar:000010.jpg: not an image format PIL can read (17 bytes).")
    assert corrupt["caption"] == f"photo {CORRUPT_KEY}"  # its json is still read

    truncated = tables[2]
    assert 0 < len(truncated) < len(curation_data.keys[2])
    assert "cut short" in truncated[-1]["error"] and "rest of the shard is not scored" in truncated[-1]["error"]
    assert all(row["error"] is None for row in truncated[:-1])
    assert [row["key"] for row in truncated[:-1]] == curation_data.keys[2][: len(truncated) - 1]

    scored = [row for table in tables for row in table if row["error"] is None]
    assert len(scored) > 150
    for row in scored:
        assert_scores_equal(row, curation_data.reference[row["key"]], SCORES)
        assert row["url"] in (f"https://example.com/{row['key']}.jpg", None)
    assert sum(row["url"] is None for row in scored) <= 1  # the sample whose json the cut fell in: image whole, scored

    table = read_scores(str(output))  # one scorer made them all
    assert table.num_rows == sum(map(len, tables))
    assert read_fingerprint(files[0])["view_policy"] == "random10"


def test_killed_run_resumes_without_duplicates(curation_data, tmp_path, monkeypatch):  # noqa: F811
    output = tmp_path / "scores"
    real_write, written = score_shards.write_table_atomic, []

    def killed_at_second_shard(table, path):
        if written:
            raise KeyboardInterrupt  # the run dies while shard 2 is being finished
        real_write(table, path)
        written.append(path)

    monkeypatch.setattr(score_shards, "write_table_atomic", killed_at_second_shard)
    with pytest.raises(KeyboardInterrupt):
        score_tars(curation_data, output)
    monkeypatch.undo()
    assert sorted(os.listdir(output)) == ["00000.parquet"]  # whole files only
    first = os.stat(output / "00000.parquet").st_mtime_ns
    (output / ".00001.parquet.tmp").write_bytes(b"half a file from a SIGKILL")  # replaced, never read

    assert score_tars(curation_data, output) == 0
    assert sorted(os.listdir(output)) == ["00000.parquet", "00001.parquet", "00002.parquet"]
    assert os.stat(output / "00000.parquet").st_mtime_ns == first  # skipped, not scored again
    keys = read_scores(str(output)).column("key").to_pylist()
    assert len(keys) == len(set(keys)) and set(curation_data.keys[0] + curation_data.keys[1]) <= set(keys)


def test_other_scorer_refused(curation_data, tmp_path, caplog):  # noqa: F811
    output = tmp_path / "scores"
    assert score_tars(curation_data, output) == 0
    before = {name: os.stat(output / name).st_mtime_ns for name in os.listdir(output)}
    assert score_tars(curation_data, output, "--view-policy", "center") == 2
    assert "00000.parquet: made by another scorer (view_policy: was 'random10', now 'center')" in caplog.text
    assert {name: os.stat(output / name).st_mtime_ns for name in os.listdir(output)} == before

    other = tmp_path / "center"
    assert score_tars(curation_data, other, "--view-policy", "center") == 0
    with pytest.raises(MixedScoresError, match="view_policy"):
        read_scores([str(output), str(other)])


def test_bad_shard_inputs(curation_data, tmp_path, caplog):  # noqa: F811
    arguments = ["--model", curation_data.model, "--output", str(tmp_path / "out")]
    assert main(["score", str(tmp_path / "missing_{0..1}.tar"), *arguments]) == 2
    assert "missing_0.tar: no such shard" in caplog.text
    assert main(["score", curation_data.shards[0], curation_data.paths[0], *arguments]) == 2
    assert "cannot be mixed" in caplog.text
    assert main(["score", curation_data.shards[0], "--model", curation_data.model, "--output", str(tmp_path / "s.csv")]) == 2
    assert "into a folder" in caplog.text
    assert main(["score", curation_data.paths[0], "--model", curation_data.model, "--output", str(tmp_path / "s.csv"), "--keep-columns", "url"]) == 2
    assert "--keep-columns applies to tar shards and --dataset only" in caplog.text


def test_sample_without_image_and_shards_over_two_processes(saved_tiny_model, tmp_path):
    folder = tmp_path / "shards"
    paths = write_jpegs(str(tmp_path / "images"), 6)
    os.makedirs(folder)
    data = [(f"{index:03d}", Path(path).read_bytes()) for index, path in enumerate(paths)]
    for shard in range(3):
        write_shard(str(folder / f"{shard}.tar"), data[shard * 2 : shard * 2 + 2])
    samples = list(iter_samples(str(folder / "0.tar")))
    assert [sample.key for sample in samples] == ["000", "001"] and samples[0].meta["caption"] == "photo 000"
    with tarfile.open(tmp_path / "no_image.tar", "w") as archive:  # a sample whose image download failed
        info = tarfile.TarInfo("dir/042.json")
        info.size = 2
        archive.addfile(info, io.BytesIO(b"{}"))
    (lonely,) = iter_samples(str(tmp_path / "no_image.tar"))
    assert lonely.key == "dir/042" and "sample dir/042: no image member" in lonely.error

    # a tar cut exactly before a header: tarfile itself reads it as a short, whole archive
    with tarfile.open(folder / "1.tar") as archive:
        third_member = archive.getmembers()[3].offset  # 002.jpg, 002.json, 002.txt, then 003.jpg
    cut = tmp_path / "cut.tar"
    cut.write_bytes((folder / "1.tar").read_bytes()[:third_member])
    whole, rest = iter_samples(str(cut))
    assert whole.key == "002" and whole.error is None and whole.image
    assert rest.key is None and "cut short or corrupt in a member header" in rest.error and "no end-of-archive marker" in rest.error

    result = launch_two_processes(
        ["-m", "modeling_uniqa.cli", "score", str(folder / "{0..2}.tar"), "--model", saved_tiny_model, "--output", str(tmp_path / "out"), "--workers", "0"],
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 shards to score (0 already" in result.stderr and "2 process(es)" in result.stderr
    assert "Scored 3 shards" in result.stderr and "6 images" in result.stderr
    keys = read_scores(str(tmp_path / "out")).column("key").to_pylist()
    assert sorted(keys) == [key for key, _ in data]


def test_animated_members_are_scored_on_their_first_frame_and_counted(saved_tiny_model, tmp_path, caplog):
    """As `uniqa score` does for files: an animated PNG in a shard is scored on its first frame,
    logged by key and counted, not passed over in silence."""
    from PIL import Image

    from modeling_uniqa.scoring.image_scorer import ImageScorer

    frames = [Image.new("RGB", (40, 40), colour) for colour in ((200, 30, 30), (30, 200, 30), (30, 30, 200))]
    animated = io.BytesIO()
    frames[0].save(animated, format="PNG", save_all=True, append_images=frames[1:])
    still = io.BytesIO()
    frames[0].save(still, format="PNG")
    shard = tmp_path / "0.tar"
    with tarfile.open(shard, "w") as archive:
        for key, data in (("anim", animated.getvalue()), ("still", still.getvalue())):
            info = tarfile.TarInfo(f"{key}.png")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    scorer = ImageScorer(saved_tiny_model, key_column="key", view_policy="center")
    os.makedirs(tmp_path / "out")
    with caplog.at_level("INFO", logger="modeling_uniqa"):
        counts = score_shards.score_shards(scorer, [str(shard)], str(tmp_path / "out"), workers=0, show_progress=False)
    assert counts == {"shards": 1, "images": 2, "errors": 0, "multi_frame": 1}
    assert "Scored on its first frame of 3: anim" in caplog.text
    rows = pq.read_table(tmp_path / "out" / "0.parquet").to_pylist()
    assert rows[0]["score"] == pytest.approx(rows[1]["score"], abs=1e-6)  # the first frame is the still image


def test_link_members_are_error_rows_not_lost(tmp_path):
    """Issue 23, finding 10: symlink and hard-link members vanished without a row or a count."""
    shard = tmp_path / "links.tar"
    with tarfile.open(shard, "w") as archive:
        def add(name, data=None, kind=tarfile.REGTYPE, target=""):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            info.size = len(data) if data is not None else 0
            archive.addfile(info, io.BytesIO(data) if data is not None else None)

        add("000.jpg", b"not really a jpeg")
        add("001.jpg", kind=tarfile.SYMTYPE, target="/etc/passwd")
        add("001.json", b"{}")
        add("002.jpg", kind=tarfile.LNKTYPE, target="000.jpg")
    samples = {sample.key: sample for sample in iter_samples(str(shard))}
    assert sorted(samples) == ["000", "001", "002"]
    assert samples["000"].error is None and samples["000"].image == b"not really a jpeg"
    assert "001.jpg: a symbolic link (to /etc/passwd), not read: skipped" in samples["001"].error
    assert samples["001"].image is None and samples["001"].meta == {}
    assert "002.jpg: a hard link (to 000.jpg), not read: skipped" in samples["002"].error
