"""ShardedOutput: part files, merge order, resume, fingerprints, foreign files, umask, odd names."""

import csv
import json
import os
import stat

import pytest

from modeling_uniqa.scoring.sharded_output import (
    OutputError,
    ShardedOutput,
    check_writable,
    meta_path,
    part_files,
    read_meta,
)

COLUMNS = ["path", "score", "error"]
FINGERPRINT = {"model": "abc", "view_policy": "center", "columns": COLUMNS}


def parse_score_row(row):
    return row | {"score": float(row["score"]) if row["score"] else None, "error": row["error"] or None}


def scores(path, fingerprint=FINGERPRINT, **kwargs):
    return ShardedOutput(
        str(path), COLUMNS, ["path"], fingerprint, is_done=lambda row: not row["error"], parse_csv_row=parse_score_row, **kwargs
    )


def row(path, score=None, error=None):
    return {"path": path, "score": score, "error": error}


def run(output, keys, rows_by_process, resume=False, overwrite=False):
    """One run: check, start, every process writes its rows, finish."""
    output.check(resume=resume, overwrite=overwrite)
    output.start(resume=resume)
    done = output.done_keys()
    for rank, rows in enumerate(rows_by_process):
        with output.part_writer(rank) as writer:
            writer.write([r for r in rows if r["path"] not in done])
    return output.finish(keys)


def read_csv(path):
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as handle:
        return list(csv.DictReader(handle))


def test_two_writers_merge_in_key_order(tmp_path):
    output = scores(tmp_path / "out.csv")
    result = run(output, ["a", "b", "c", "d"], [[row("c", 0.3), row("a", 0.1)], [row("d", error="bad"), row("b", 0.2)]])
    assert [r["path"] for r in read_csv(tmp_path / "out.csv")] == ["a", "b", "c", "d"]
    assert [r["path"] for r in result.rows] == ["a", "b", "c", "d"] and not result.kept_previous
    assert read_csv(tmp_path / "out.csv")[3]["error"] == "bad"
    assert part_files(output.output) == []
    meta = read_meta(output.output)
    assert meta["fingerprint"] == FINGERPRINT and meta["in_progress"] is None
    assert sorted(os.listdir(tmp_path)) == ["out.csv", "out.csv.meta.json"]  # no temporary files left


def test_rows_stream_to_disk_per_batch(tmp_path):
    output = scores(tmp_path / "out.csv")
    output.check(resume=False)
    output.start(resume=False)
    writer = output.part_writer(0)
    writer.write([row("a", 0.5)])
    assert read_csv(tmp_path / "out.csv.part0") == [{"path": "a", "score": "0.5", "error": ""}]  # flushed, not buffered
    writer.close()


def test_resume_retries_failures_and_keeps_unlisted_rows(tmp_path):
    output = scores(tmp_path / "out.csv")
    run(output, ["a", "b", "c"], [[row("a", 0.1), row("b", error="unreadable"), row("c", 0.3)]])
    output = scores(tmp_path / "out.csv")
    output.check(resume=True)
    output.start(resume=True)
    assert output.done_keys() == {"a", "c"}
    with output.part_writer(0) as writer:
        writer.write([row("b", 0.2), row("d", 0.4), row("a", error="late failure")])  # a failure never replaces a success
    result = output.finish(["d", "b", "a"])  # "c" is no longer listed: kept, after the listed ones
    rows = read_csv(tmp_path / "out.csv")
    assert [(r["path"], r["score"], r["error"]) for r in rows] == [("d", "0.4", ""), ("b", "0.2", ""), ("a", "0.1", ""), ("c", "0.3", "")]
    assert [r["path"] for r in result.unlisted] == ["c"]


def test_fresh_run_drops_rows_of_unlisted_keys(tmp_path):
    run(scores(tmp_path / "out.csv"), ["a", "b"], [[row("a", 0.1), row("b", 0.2)]])
    run(scores(tmp_path / "out.csv"), ["b"], [[row("b", 0.5)]])
    assert [(r["path"], r["score"]) for r in read_csv(tmp_path / "out.csv")] == [("b", "0.5")]


def test_crash_then_resume_ignores_a_cut_line_and_appends_cleanly(tmp_path):
    output = scores(tmp_path / "out.csv")
    output.check(resume=False)
    output.start(resume=False)
    with output.part_writer(0) as writer:
        writer.write([row("a", 0.1)])
    with open(tmp_path / "out.csv.part0", "a") as handle:
        handle.write("b,0.2")  # the crash cut this line short
    output = scores(tmp_path / "out.csv")
    output.check(resume=True)
    output.start(resume=True)
    assert output.done_keys() == {"a"}
    with output.part_writer(0) as writer:
        writer.write([row("b", 0.25)])
    output.finish(["a", "b"])
    assert [(r["path"], r["score"]) for r in read_csv(tmp_path / "out.csv")] == [("a", "0.1"), ("b", "0.25")]


def test_resume_of_a_crashed_fresh_run_replaces_the_old_output(tmp_path):
    """A fresh run (no resume) that crashed was replacing the output: resuming it continues
    that, and the older output of another producer is neither mixed in nor a reason to refuse."""
    run(scores(tmp_path / "out.csv", fingerprint={"model": "old"}), ["a", "b"], [[row("a", 0.9), row("b", 0.9)]])
    output = scores(tmp_path / "out.csv")
    output.check(resume=False)
    output.start(resume=False)
    with output.part_writer(1) as writer:
        writer.write([row("a", 0.1)])
    assert [r["score"] for r in read_csv(tmp_path / "out.csv")] == ["0.9", "0.9"]  # untouched until the end
    output = scores(tmp_path / "out.csv")
    output.check(resume=True)
    output.start(resume=True)
    assert output.done_keys() == {"a"}
    with output.part_writer(0) as writer:
        writer.write([row("b", 0.2)])
    output.finish(["a", "b"])
    assert [r["score"] for r in read_csv(tmp_path / "out.csv")] == ["0.1", "0.2"]
    assert read_meta(output.output)["fingerprint"] == FINGERPRINT


def test_resume_with_another_fingerprint_is_refused(tmp_path):
    run(scores(tmp_path / "out.csv"), ["a"], [[row("a", 0.1)]])
    other = scores(tmp_path / "out.csv", fingerprint=FINGERPRINT | {"model": "xyz"})
    with pytest.raises(OutputError, match="model: was 'abc', now 'xyz'"):
        other.check(resume=True)
    other.check(resume=False)  # replacing our own file is fine
    # An unfinished run is checked too.
    other.start(resume=False)
    with pytest.raises(OutputError, match="unfinished run.*model: was 'xyz', now 'abc'"):
        scores(tmp_path / "out.csv").check(resume=True)


def test_foreign_files_are_not_replaced_without_overwrite(tmp_path):
    foreign = tmp_path / "results.csv"
    foreign.write_text("name,value\nx,1\n")
    output = scores(foreign)
    with pytest.raises(OutputError, match="not written by this tool.*--overwrite"):
        output.check(resume=False)
    with pytest.raises(OutputError, match="cannot resume.*no results.csv.meta.json"):
        output.check(resume=True)
    assert foreign.read_text() == "name,value\nx,1\n"
    (tmp_path / "stray.csv.part3").write_text("junk\n")
    with pytest.raises(OutputError, match="stray.csv.part3"):
        scores(tmp_path / "stray.csv").check(resume=False)
    run(output, ["a"], [[row("a", 0.1)]], overwrite=True)
    assert read_csv(foreign) == [{"path": "a", "score": "0.1", "error": ""}]


def test_a_run_where_everything_failed_keeps_earlier_results(tmp_path):
    run(scores(tmp_path / "out.csv"), ["a", "b"], [[row("a", 0.1), row("b", 0.2)]])
    before = (tmp_path / "out.csv").read_text()
    result = run(scores(tmp_path / "out.csv", fingerprint={"model": "new"}), ["a", "b"], [[row("a", error="x"), row("b", error="y")]])
    assert result.kept_previous and [r["error"] for r in result.rows] == ["x", "y"]
    assert (tmp_path / "out.csv").read_text() == before
    assert read_meta(str(tmp_path / "out.csv"))["fingerprint"] == FINGERPRINT  # still describes the file
    assert part_files(str(tmp_path / "out.csv")) == []


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_files_honour_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        run(scores(tmp_path / "out.csv"), ["a"], [[row("a", 0.1)]])
    finally:
        os.umask(previous)
    for name in ("out.csv", "out.csv.meta.json"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o666 & ~umask, name


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_names_that_are_not_utf8_round_trip(tmp_path, suffix):
    name = os.fsdecode(b"/photos/caf\xe9.jpg")  # what os.listdir gives for such a file
    output = scores(tmp_path / f"out{suffix}")
    run(output, [name, "/photos/ok.jpg"], [[row(name, 0.5), row("/photos/ok.jpg", 0.25)]])
    raw = (tmp_path / f"out{suffix}").read_bytes()
    assert b"/photos/caf\xe9.jpg" in raw  # the name's own bytes
    resumed = scores(tmp_path / f"out{suffix}")
    resumed.check(resume=True)
    resumed.start(resume=True)
    assert resumed.done_keys() == {name, "/photos/ok.jpg"}


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_unicode_line_separators_inside_values_round_trip(tmp_path, suffix):
    """JSON leaves U+2028, U+2029 and U+0085 raw: they must not split a record (it was dropped)."""
    keys = ["a\u2028b.jpg", "c\x85d.jpg", "e\u2029f.jpg", "plain.jpg"]
    result = run(scores(tmp_path / f"out{suffix}"), keys, [[row(key, 0.5) for key in keys]])
    assert [r["path"] for r in result.rows] == keys
    resumed = scores(tmp_path / f"out{suffix}")
    resumed.check(resume=True)
    resumed.start(resume=True)
    assert resumed.done_keys() == set(keys)


def test_jsonl_with_a_compound_key(tmp_path):
    """Captioning-shaped rows: one caption a line, keyed by (image, caption_index)."""
    output = ShardedOutput(str(tmp_path / "captions.jsonl"), ["image", "caption_index", "caption"], ["image", "caption_index"], {"model": "m"})
    keys = [(image, index) for image in ("x.jpg", "y.jpg") for index in range(2)]
    rows = [{"image": image, "caption_index": index, "caption": f"{image} #{index}"} for image, index in reversed(keys)]
    output.check(resume=False)
    output.start(resume=False)
    with output.part_writer(0) as writer:
        writer.write(rows[:2])
    output.start(resume=True)
    assert output.done_keys() == {("y.jpg", 1), ("y.jpg", 0)}
    with output.part_writer(1) as writer:
        writer.write(rows[2:])
    output.finish(keys)
    lines = [json.loads(line) for line in (tmp_path / "captions.jsonl").read_text().splitlines()]
    assert [(line["image"], line["caption_index"]) for line in lines] == keys


def test_a_resume_keeps_rows_written_before_a_column_was_added(tmp_path):
    """Captions written before `meaning` existed: read with its default, kept, written with it."""
    path, keys = str(tmp_path / "captions.jsonl"), [("x.jpg", 0), ("y.jpg", 0)]
    old = ShardedOutput(path, ["image", "caption_index", "caption"], ["image", "caption_index"], {"model": "m"})
    run_rows = [{"image": "x.jpg", "caption_index": 0, "caption": "old"}]
    old.check(resume=False)
    old.start(resume=False)
    with old.part_writer(0) as writer:
        writer.write(run_rows)
    old.finish(keys[:1])
    columns = ["image", "caption_index", "caption", "meaning"]
    new = ShardedOutput(path, columns, ["image", "caption_index"], {"model": "m"}, added_columns={"meaning": None})
    new.check(resume=True)
    new.start(resume=True)
    assert new.done_keys() == {("x.jpg", 0)}
    with new.part_writer(0) as writer:
        writer.write([{"image": "y.jpg", "caption_index": 0, "caption": "new", "meaning": "q|good"}])
    new.finish(keys)
    lines = [json.loads(line) for line in (tmp_path / "captions.jsonl").read_text().splitlines()]
    assert lines == [{"image": "x.jpg", "caption_index": 0, "caption": "old", "meaning": None},
                     {"image": "y.jpg", "caption_index": 0, "caption": "new", "meaning": "q|good"}]
    # without the default, such a row is unreadable and made again
    plain = ShardedOutput(path, [*columns, "extra"], ["image", "caption_index"], {"model": "m"})
    plain.start(resume=True)
    assert plain.done_keys() == set()


def test_check_writable(tmp_path):
    check_writable(str(tmp_path / "new" / "folder" / "out.csv"))  # folders are created
    assert (tmp_path / "new" / "folder").is_dir() and not os.listdir(tmp_path / "new" / "folder")
    blocker = tmp_path / "file.txt"
    blocker.write_text("")
    with pytest.raises(OutputError, match="file.txt/out.csv: cannot write"):
        check_writable(str(blocker / "out.csv"))
    with pytest.raises(OutputError, match="is a folder"):
        check_writable(str(tmp_path / "new"))


def test_sidecar_is_json_beside_the_output(tmp_path):
    run(scores(tmp_path / "out.jsonl"), ["a"], [[row("a", 0.1)]])
    with open(meta_path(str(tmp_path / "out.jsonl"))) as handle:
        assert json.load(handle)["fingerprint"] == FINGERPRINT
