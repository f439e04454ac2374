"""`uniqa retrieve` and the embedding index: round trip, incremental update, atomic saves,
refusal of another model's index, ranking equal to brute force, contact sheet and HTML."""

import html
import json
import os
import urllib.parse

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_uniqa.analysis import embedding_index
from modeling_uniqa.analysis.contact_sheet import write_contact_sheet, write_html
from modeling_uniqa.analysis.embedding_index import (
    INDEX_FILE,
    EmbeddingIndex,
    EmbeddingIndexError,
    IndexEntry,
    top_rows,
    update_index,
)
from modeling_uniqa.analysis.retrieve import index_images, search
from modeling_uniqa.cli import main
from modeling_uniqa.core.model_folder import load_model
from modeling_uniqa.core.zero_shot import embed_image_views, embed_texts, embedding_fingerprint
from tests.helpers import random_rgb


def write_image(path, seed, size=(40, 52)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(random_rgb(*size, seed=seed)).save(path)
    return os.path.abspath(path)


def fake_embed(dim=4, calls=None):
    """An embed function for `update_index` that needs no model: a file's embedding is a
    function of its bytes, one batch of two files at a time; files named *bad* fail."""

    def embed(paths):
        if calls is not None:
            calls.extend(paths)
        for start in range(0, len(paths), 2):
            positions, embeddings, errors = [], [], []
            for position in range(start, min(start + 2, len(paths))):
                if "bad" in os.path.basename(paths[position]):
                    errors.append((position, f"{paths[position]}: cannot read image"))
                    continue
                with open(paths[position], "rb") as handle:
                    seed = sum(handle.read()) % 2**32
                positions.append(position)
                embeddings.append(torch.from_numpy(np.random.default_rng(seed).standard_normal(dim).astype(np.float32)))
            yield positions, torch.stack(embeddings) if embeddings else torch.zeros((0, dim)), errors

    return embed


@pytest.fixture
def files(tmp_path):
    return [write_image(str(tmp_path / "img" / f"{name}.png"), seed) for seed, name in enumerate("abcde")]


# --------------------------------------------------------------------------------------------
# Ranking
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("top_k", [1, 5, 37, 200, 500])
def test_top_rows_is_a_stable_sort_by_decreasing_score(top_k):
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 20, size=300).astype(np.float32) / 7  # many ties, also at the cut
    expected = np.argsort(-scores, kind="stable")[:top_k]
    assert [row for row, _ in top_rows(scores, top_k)] == expected.tolist()
    assert [score for _, score in top_rows(scores, top_k)] == scores[expected].tolist()


def test_search_equals_brute_force_over_a_large_index():
    rng = np.random.default_rng(1)
    embeddings = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((5000, 32)).astype(np.float32)), dim=-1)
    index = EmbeddingIndex("f", [IndexEntry(f"/x/{row}.png", 1, 1) for row in range(5000)], embeddings)
    queries = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((3, 32)).astype(np.float32)), dim=-1)
    for column, hits in enumerate(index.search(queries, 25)):
        brute = [(row, float(embeddings[row] @ queries[column])) for row in range(5000)]
        brute.sort(key=lambda pair: -pair[1])
        assert [row for row, _ in hits] == [row for row, _ in brute[:25]]
        np.testing.assert_allclose([score for _, score in hits], [score for _, score in brute[:25]], atol=1e-6)


def test_retrieval_ranking_equals_the_models_own_similarities(saved_tiny_model, tmp_path):
    """Index + search give the order of the per-image similarity computed directly: the mean over
    the image's views of the cosine between view embedding and query embedding."""
    model, processor, tokenizer = load_model(saved_tiny_model, need_tokenizer=True)
    paths = [write_image(str(tmp_path / "img" / f"{seed}.png"), seed, size=(36 + seed, 50)) for seed in range(8)]
    index, report = index_images(model, processor, paths, str(tmp_path / "index"), view_policy="random3", workers=0, batch_size=5, show_progress=False)
    assert (report.added, len(index)) == (8, 8)
    queries = ["blurry image", "good image"]
    results = search(index, model, tokenizer, queries, top_k=8)
    text = embed_texts(model, tokenizer, queries)
    with torch.no_grad():
        for query_number, result in enumerate(results):
            direct = []
            for path in paths:
                views = processor.views(Image.open(path).convert("RGB"), "random3", model.config.view_seed)
                embeds = embed_image_views(model, torch.from_numpy(processor.normalize_views(views)))
                direct.append(float((embeds @ text[query_number]).mean()))
            order = np.argsort(-np.asarray(direct), kind="stable")
            assert result.query == queries[query_number]
            assert [path for path, _ in result.hits] == [paths[row] for row in order]
            np.testing.assert_allclose([similarity for _, similarity in result.hits], np.asarray(direct)[order], atol=1e-5)


def test_a_query_longer_than_the_context_is_cut_with_a_warning(tiny_model_factory, tiny_tokenizer, caplog):
    model = tiny_model_factory()
    long = "blurry " * 40 + "image"  # 200+ tokens, the tiny text tower reads 32
    embeds = embed_texts(model, tiny_tokenizer, ["good image", long])
    assert embeds.shape[0] == 2 and torch.isfinite(embeds).all()
    assert [record.getMessage() for record in caplog.records if record.levelname == "WARNING"] == [
        f"{long[:77] + '...'!r} is {len(tiny_tokenizer(long)['input_ids'])} tokens long, the text tower reads 32: only its beginning is embedded."
    ]


# --------------------------------------------------------------------------------------------
# The index folder
# --------------------------------------------------------------------------------------------
def test_index_round_trip(files, tmp_path):
    directory = str(tmp_path / "index")
    index, report = update_index(directory, files, "fp-1", fake_embed(), info={"model": "m"})
    assert (report.added, report.kept, report.changed, report.removed, report.failed) == (5, 0, 0, 0, [])
    loaded = EmbeddingIndex.load(directory, "fp-1")
    assert loaded.entries == index.entries and loaded.paths == files
    assert loaded.info == {"model": "m"} and loaded.fingerprint == "fp-1"
    torch.testing.assert_close(loaded.embeddings, index.embeddings, rtol=0, atol=0)
    stat = os.stat(files[2])
    assert loaded.entries[2].signature == (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    with open(os.path.join(directory, INDEX_FILE)) as handle:
        header = json.load(handle)
    stat = os.stat(files[0])
    assert header["entries"][0] == {"path": files[0], "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns}
    assert sorted(os.listdir(directory)) == sorted([INDEX_FILE, header["embeddings_file"]])


def test_incremental_update_embeds_only_new_and_changed_files(files, tmp_path):
    directory = str(tmp_path / "index")
    update_index(directory, files, "fp", fake_embed())
    before = EmbeddingIndex.load(directory)

    calls = []
    _, report = update_index(directory, files, "fp", fake_embed(calls=calls))
    assert calls == [] and report.kept == 5  # nothing to do: nothing embedded

    added = write_image(os.path.join(os.path.dirname(files[0]), "f.png"), 10)
    write_image(files[1], 11)  # changed content, new size or mtime
    stat = os.stat(files[3])
    os.utime(files[3], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: embedded again
    os.remove(files[4])
    current = [files[0], files[1], files[2], files[3], added]
    calls = []
    index, report = update_index(directory, current, "fp", fake_embed(calls=calls))
    assert sorted(calls) == sorted([files[1], files[3], added])
    assert (report.kept, report.added, report.changed, report.removed) == (2, 1, 2, 1)
    assert index.paths == current
    torch.testing.assert_close(index.embeddings[[0, 2]], before.embeddings[[0, 2]], rtol=0, atol=0)
    fresh, _ = update_index(str(tmp_path / "fresh"), current, "fp", fake_embed())
    torch.testing.assert_close(index.embeddings, fresh.embeddings, rtol=0, atol=0)
    assert EmbeddingIndex.load(directory).entries == index.entries


def test_a_file_replaced_with_its_old_size_and_mtime_is_embedded_again(files, tmp_path):
    """`cp -p` / `tar x` keep the mtime: a same-size replacement must not keep its stale embedding;
    entries of indexes that recorded no ctime are embedded again once."""
    directory = str(tmp_path / "index")
    first, _ = update_index(directory, files, "fp", fake_embed())
    stat = os.stat(files[0])
    with open(files[0], "r+b") as handle:  # other bytes, same size
        data = bytearray(handle.read())
        data[len(data) // 2] ^= 0xFF
        handle.seek(0)
        handle.write(data)
    os.utime(files[0], ns=(stat.st_atime_ns, stat.st_mtime_ns))
    while os.stat(files[0]).st_ctime_ns == stat.st_ctime_ns:  # a coarse clock: wait for its next tick
        os.utime(files[0], ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (os.stat(files[0]).st_size, os.stat(files[0]).st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    calls = []
    index, report = update_index(directory, files, "fp", fake_embed(calls=calls))
    assert calls == [files[0]] and (report.kept, report.changed) == (4, 1)
    assert not torch.equal(index.embeddings[0], first.embeddings[0])

    with open(os.path.join(directory, INDEX_FILE)) as handle:  # as written before ctimes were recorded
        header = json.load(handle)
    for entry in header["entries"]:
        del entry["ctime_ns"]
    with open(os.path.join(directory, INDEX_FILE), "w") as handle:
        json.dump(header, handle)
    calls = []
    _, report = update_index(directory, files, "fp", fake_embed(calls=calls))
    assert calls == files and report.changed == 5


def test_files_that_fail_are_reported_and_left_out(files, tmp_path):
    bad = write_image(os.path.join(os.path.dirname(files[0]), "bad.png"), 3)
    missing = os.path.join(os.path.dirname(files[0]), "gone.png")
    index, report = update_index(str(tmp_path / "index"), [*files, bad, missing], "fp", fake_embed())
    assert index.paths == files
    assert [path for path, _ in report.failed] == [missing, bad]


def test_an_index_of_another_model_is_refused(files, tmp_path):
    directory = str(tmp_path / "index")
    update_index(directory, files, "fp-a", fake_embed(), info={"model": "a"})
    with pytest.raises(EmbeddingIndexError, match="built by another model"):
        update_index(directory, files, "fp-b", fake_embed())
    with pytest.raises(EmbeddingIndexError, match="built by another model"):
        EmbeddingIndex.load(directory, "fp-b")
    assert EmbeddingIndex.load(directory, "fp-a").paths == files  # untouched


def test_a_save_that_fails_leaves_the_previous_index(files, tmp_path, monkeypatch):
    directory = str(tmp_path / "index")
    update_index(directory, files[:3], "fp", fake_embed())
    real_replace = os.replace

    def failing_replace(source, target):
        if os.path.basename(target) == INDEX_FILE:
            raise OSError("disk full")
        return real_replace(source, target)

    monkeypatch.setattr(embedding_index.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        update_index(directory, files, "fp", fake_embed())
    monkeypatch.undo()
    index = EmbeddingIndex.load(directory, "fp")
    assert index.paths == files[:3]
    assert len(os.listdir(directory)) == 2  # no temporary or orphaned embeddings files


def test_an_interrupted_update_keeps_what_it_computed(files, tmp_path):
    directory = str(tmp_path / "index")

    def interrupted(paths):
        batches = fake_embed()(paths)
        yield next(batches)  # two files
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        update_index(directory, files, "fp", interrupted)
    assert EmbeddingIndex.load(directory).paths == files[:2]
    calls = []
    index, report = update_index(directory, files, "fp", fake_embed(calls=calls))
    assert calls == files[2:] and report.kept == 2 and index.paths == files


def test_index_checkpoints_while_embedding(files, tmp_path):
    directory = str(tmp_path / "index")
    seen = []

    def watching(paths):
        for batch in fake_embed()(paths):
            if os.path.exists(os.path.join(directory, INDEX_FILE)):
                seen.append(len(EmbeddingIndex.load(directory)))
            yield batch

    update_index(directory, files, "fp", watching, checkpoint_seconds=0)
    assert seen == [2, 4]  # saved after every batch


# --------------------------------------------------------------------------------------------
# Command line: contact sheet and HTML
# --------------------------------------------------------------------------------------------
def test_cli_writes_sheet_and_html_with_the_same_ranking(saved_tiny_model, tmp_path, capsys):
    folder = tmp_path / "photos"
    paths = [write_image(str(folder / name), seed) for seed, name in enumerate(["a.png", "b & c #1.png", "sub/d.jpg", "e.png"])]
    output = tmp_path / "out" / "sheet.png"
    query = 'sharp <image> & "good"'
    code = main(["retrieve", str(folder), "--model", saved_tiny_model, "--query", "blurry image", "--query", query,
                 "--top", "3", "--output", str(output), "--workers", "0", "--thumb-size", "64", "--view-policy", "center"])
    assert code == 0
    index = EmbeddingIndex.load(str(tmp_path / "out" / "uniqa-index"))
    assert sorted(index.paths) == sorted(paths) and index.info["view_policy"] == "center"
    model, _, tokenizer = load_model(saved_tiny_model, need_tokenizer=True)
    expected = search(index, model, tokenizer, ["blurry image", query], top_k=3)

    with Image.open(output) as sheet:  # 2 query rows of 3 thumbnails of 64 px
        width, height = sheet.size
        assert width == 8 + 160 + 3 * (64 + 8) and 2 * (64 + 8) < height < 2 * (64 + 40)
    page = (tmp_path / "out" / "sheet.html").read_text()
    assert f"<h2>{html.escape(query)}</h2>" in page and query not in page
    sections = page.split("<section>")[1:]
    for section, result in zip(sections, expected):
        links = [piece.split('"')[0] for piece in section.split('<img src="')[1:]]
        assert [os.path.normpath(os.path.join(tmp_path / "out", urllib.parse.unquote(link))) for link in links] == [
            path for path, _ in result.hits
        ]
        assert all(not link.startswith("/") for link in links)
    assert "b%20%26%20c%20%231.png" in page  # percent-encoded: '#' would cut the URL short

    printed = capsys.readouterr().out
    assert printed.index("blurry image") < printed.index(expected[0].hits[0][0])

    # A query over the index as it is, no INPUTs; another model's settings are refused.
    assert main(["retrieve", "--model", saved_tiny_model, "--query", "noisy image", "--output", str(tmp_path / "out" / "again.png"), "--view-policy", "center"]) == 0
    assert (tmp_path / "out" / "again.html").exists()
    assert main(["retrieve", "--model", saved_tiny_model, "--query", "noisy image", "--output", str(tmp_path / "out" / "x.png"), "--view-policy", "resize"]) == 2
    with pytest.raises(SystemExit, match="2"):
        main(["retrieve", str(folder), "--model", saved_tiny_model, "--query", "x", "--output", str(tmp_path / "out" / "x.jpg")])
    # An output that cannot be written is refused before any indexing (which may take hours).
    (tmp_path / "a_file").write_text("")
    blocked = tmp_path / "a_file" / "sheet.png"
    assert main(["retrieve", str(folder), "--model", saved_tiny_model, "--query", "x", "--output", str(blocked),
                 "--index", str(tmp_path / "never")]) == 2
    assert not (tmp_path / "never").exists()


def test_embedding_fingerprint_names_what_the_embeddings_depend_on(saved_tiny_model, tiny_model_factory):
    model, processor, _ = load_model(saved_tiny_model, need_tokenizer=True)
    reloaded, _, _ = load_model(saved_tiny_model)
    base = embedding_fingerprint(model, processor, "random10", 123, "adapted")
    assert embedding_fingerprint(reloaded, processor, "random10", 123, "adapted") == base
    assert embedding_fingerprint(model, processor, "center", 123, "adapted") != base
    assert embedding_fingerprint(model, processor, "random10", 7, "adapted") != base
    assert embedding_fingerprint(model, processor, "random10", 123, "clip") != base
    with torch.no_grad():
        reloaded.adapter.fc[0].weight[0, 0] += 1e-3  # the adapter changes I'
    assert embedding_fingerprint(reloaded, processor, "random10", 123, "adapted") != base
    assert embedding_fingerprint(reloaded, processor, "random10", 123, "clip") == embedding_fingerprint(model, processor, "random10", 123, "clip")
    other = tiny_model_factory(seed=1, prompt_groups="natural")
    assert embedding_fingerprint(other, processor, "random10", 123, "clip") != embedding_fingerprint(model, processor, "random10", 123, "clip")


def test_embedding_fingerprint_records_jpeg_draft_where_it_applies(saved_tiny_model):
    """An index embedded from drafted JPEGs is not reused for full decodes (nor the reverse)."""
    model, processor, _ = load_model(saved_tiny_model)
    full = {policy: embedding_fingerprint(model, processor, policy, 123, "adapted") for policy in ("resize", "random10")}
    processor.jpeg_draft = True
    assert embedding_fingerprint(model, processor, "resize", 123, "adapted") != full["resize"]
    assert embedding_fingerprint(model, processor, "random10", 123, "adapted") == full["random10"]  # never drafted: same index


def test_a_sheet_written_among_the_photos_is_not_indexed(saved_tiny_model, tmp_path):
    folder = tmp_path / "photos"
    paths = [write_image(str(folder / f"{seed}.png"), seed) for seed in range(2)]
    arguments = ["retrieve", str(folder), "--model", saved_tiny_model, "--query", "good image", "--view-policy", "center",
                 "--workers", "0", "--output", str(folder / "sheet.png"), "--index", str(tmp_path / "index")]
    assert main(arguments) == 0 and main(arguments) == 0
    assert EmbeddingIndex.load(str(tmp_path / "index")).paths == paths


def test_html_links_non_utf8_file_names_by_their_bytes(tmp_path):
    folder = os.fsencode(str(tmp_path))
    path = os.fsdecode(folder + b"/caf\xe9 #2.png")
    Image.fromarray(random_rgb(20, 20)).save(path)
    results = [("a query", [(path, 0.5)])]
    write_html(results, str(tmp_path / "page.html"))
    write_contact_sheet(results, str(tmp_path / "sheet.png"))
    page = (tmp_path / "page.html").read_bytes().decode("utf-8")  # valid UTF-8
    assert 'src="caf%E9%20%232.png"' in page and "caf\\xe9 #2.png" in page


@pytest.mark.parametrize("query", ["", "   "])
def test_an_empty_query_is_refused_before_anything_is_embedded(saved_tiny_model, tmp_path, monkeypatch, caplog, query):
    """Issue 23, finding 11: `--query ""` embedded the whole folder before refusing."""
    import modeling_uniqa.cli.retrieve as retrieve_cli

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(random_rgb(32, 32, seed=1)).save(photos / "a.png")

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded for an empty query")

    monkeypatch.setattr(retrieve_cli, "load_model", no_loading)
    assert main(["retrieve", str(photos), "--model", saved_tiny_model, "--query", "sharp", "--query", query,
                 "--output", str(tmp_path / "sheet.png")]) == 2
    assert "--query number 2 is empty" in caplog.text
    assert not (tmp_path / "uniqa-index").exists() and not (tmp_path / ".uniqa-index").exists()
