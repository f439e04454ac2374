"""Benchmark: a text query over a 100,000-image embedding index (what `uniqa retrieve` does
after the images are indexed).

Generates N random L2-normalised 512-d embeddings (ViT-B/16's projection size) and an index
folder for N placeholder files (empty files in a temporary folder, so the staleness check stats
real files), then times

1. saving and loading the index (safetensors + JSON),
2. the incremental update of an up-to-date index (one `os.stat` per file, nothing embedded),
3. ranking: one query (a matrix-vector product and a top-k) and a batch of queries,
4. embedding the query text with a random ViT-B/16-size CLIP text tower (`--skip-text` to skip).

Usage: ``python benchmarks/bench_retrieve.py [--entries N] [--dim D] [--top K] [--repeats R]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from modeling_uniqa.analysis.embedding_index import EmbeddingIndex, IndexEntry, file_signature, update_index  # noqa: E402


def timed(function, repeats: int = 1):
    """(result of the last call, median seconds over `repeats` calls)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def text_query_seconds(repeats: int) -> float:
    """Median seconds to embed one short query with a random CLIP ViT-B/16 text tower."""
    from transformers import CLIPConfig

    from modeling_uniqa import UniQAConfig, UniQAModel
    from modeling_uniqa.clip_tokenizer import build_clip_tokenizer
    from modeling_uniqa.core.zero_shot import embed_texts

    clip_config = CLIPConfig(
        text_config={"hidden_size": 512, "intermediate_size": 2048, "num_attention_heads": 8, "num_hidden_layers": 12},
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 1, "patch_size": 16, "image_size": 224},
        projection_dim=512,
    )
    torch.manual_seed(0)
    model = UniQAModel(UniQAConfig(clip_config=clip_config.to_dict())).eval()
    tokenizer = build_clip_tokenizer()
    embed_texts(model, tokenizer, ["warm-up"])
    return timed(lambda: embed_texts(model, tokenizer, ["a blurry photo of a dog"]), repeats)[1]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--top", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--skip-text", action="store_true", help="Do not time the text tower.")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.entries:,} entries x {args.dim} float32")

    rng = np.random.default_rng(0)
    embeddings = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((args.entries, args.dim), dtype=np.float32)), dim=-1)
    with tempfile.TemporaryDirectory() as root:
        images = os.path.join(root, "images")
        os.makedirs(images)
        paths = []
        for number in range(args.entries):
            path = os.path.join(images, f"{number:07d}.jpg")
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
            paths.append(path)
        entries = [IndexEntry(path, *file_signature(path)) for path in paths]
        directory = os.path.join(root, "index")
        index = EmbeddingIndex("benchmark", entries, embeddings, {"model": "random"})

        _, save_seconds = timed(lambda: index.save(directory))
        size = sum(os.path.getsize(os.path.join(directory, name)) for name in os.listdir(directory))
        loaded, load_seconds = timed(lambda: EmbeddingIndex.load(directory, "benchmark"), repeats=3)

        def never_called(todo):
            raise AssertionError(f"{len(todo)} files would be embedded again")

        _, update_seconds = timed(lambda: update_index(directory, paths, "benchmark", never_called), repeats=3)

        query = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((1, args.dim), dtype=np.float32)), dim=-1)
        queries = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((10, args.dim), dtype=np.float32)), dim=-1)
        loaded.search(query, args.top)  # warm-up
        hits, one_seconds = timed(lambda: loaded.search(query, args.top), args.repeats)
        _, ten_seconds = timed(lambda: loaded.search(queries, args.top), args.repeats)
        _, product_seconds = timed(lambda: loaded.embeddings @ query.t(), args.repeats)
        brute = torch.argsort(-(loaded.embeddings @ query.t())[:, 0], stable=True)[: args.top].tolist()
        assert [row for row, _ in hits[0]] == brute, "ranking differs from a full sort"

    print(f"index on disk             {size / 2**20:9.1f} MiB")
    print(f"save (atomic)             {save_seconds * 1e3:9.1f} ms")
    print(f"load                      {load_seconds * 1e3:9.1f} ms")
    print(f"update, nothing changed   {update_seconds * 1e3:9.1f} ms   ({args.entries:,} os.stat calls)")
    print(f"matrix-vector product     {product_seconds * 1e3:9.2f} ms")
    print(f"search, 1 query, top {args.top:<4} {one_seconds * 1e3:9.2f} ms")
    print(f"search, 10 queries        {ten_seconds * 1e3:9.2f} ms")
    if not args.skip_text:
        print(f"embed the query text      {text_query_seconds(min(args.repeats, 10)) * 1e3:9.2f} ms   (ViT-B/16-size text tower, random weights)")
    print(f"a new query, end to end   {(load_seconds + update_seconds + one_seconds) * 1e3:9.1f} ms + the text embedding + loading the model")


if __name__ == "__main__":
    main()
