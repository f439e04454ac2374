"""Scoring speed options: malloc tuning, row-chunked MLPs, torch.compile, int8 quantisation, and
their `uniqa score` flags (exactness, refusals, resume fingerprints)."""

import copy
import logging
import os
import resource

import pytest
import torch

from modeling_uniqa.cli import main
from modeling_uniqa.core import cpu_runtime, device_defaults
from modeling_uniqa.core.inference_speed import (
    ClassTokenLastLayer,
    RowChunkedMLP,
    chunk_vision_mlps,
    class_token_last_layer,
    compile_pays_off,
    compile_vision_tower,
    optimize_for_scoring,
    quantize_vision_int8,
)
from modeling_uniqa.scoring import score_images
from tests.test_score_images import read_csv

CPU = torch.device("cpu")


@pytest.fixture
def model(tiny_model_factory):
    return tiny_model_factory()


def scores(model, pixels):
    with torch.inference_mode():
        return model(pixel_values=pixels).scores


def test_row_chunked_mlps_are_exact_and_keep_the_state_dict(model):
    pixels = torch.randn(3, 4, 3, 32, 32)  # 12 views x 17 tokens: 204 rows, chunks of 7
    reference = scores(model, pixels)
    chunked = copy.deepcopy(model)
    assert chunk_vision_mlps(chunked, rows=7) == len(chunked.clip.vision_model.encoder.layers)
    assert chunk_vision_mlps(chunked, rows=7) == 0  # idempotent
    assert all(isinstance(layer.mlp, RowChunkedMLP) for layer in chunked.clip.vision_model.encoder.layers)
    assert list(chunked.state_dict()) == list(model.state_dict())
    torch.testing.assert_close(scores(chunked, pixels), reference, rtol=0, atol=1e-6)
    for layer in chunked.clip.vision_model.encoder.layers:
        layer.mlp.rows = 1024  # fewer rows than a chunk: one plain pass
    torch.testing.assert_close(scores(chunked, pixels), reference, rtol=0, atol=1e-6)


def pooled(model, pixels):
    with torch.inference_mode():
        return model.clip.get_image_features(pixel_values=pixels).pooler_output


def test_class_token_last_layer_is_exact_and_keeps_the_state_dict(model):
    pixels = torch.randn(3, 4, 3, 32, 32)  # 12 views x 17 tokens
    reference, reference_pooled = scores(model, pixels), pooled(model, pixels.flatten(0, 1))
    fast = copy.deepcopy(model)
    last = fast.clip.vision_model.encoder.layers[-1]
    assert class_token_last_layer(fast) and not class_token_last_layer(fast)  # idempotent
    layers = fast.clip.vision_model.encoder.layers
    assert all(getattr(layers[-1], name) is getattr(last, name) for name in ("self_attn", "layer_norm1", "mlp", "layer_norm2"))
    assert isinstance(layers[-1], ClassTokenLastLayer) and not any(isinstance(layer, ClassTokenLastLayer) for layer in layers[:-1])
    assert list(fast.state_dict()) == list(model.state_dict())
    torch.testing.assert_close(scores(fast, pixels), reference, rtol=0, atol=1e-6)
    torch.testing.assert_close(pooled(fast, pixels.flatten(0, 1)), reference_pooled, rtol=1e-5, atol=1e-6)
    with torch.inference_mode():  # it computes the class token's row alone
        assert fast.clip.vision_model(pixel_values=pixels.flatten(0, 1)).last_hidden_state.shape[1] == 1
    chunk_vision_mlps(fast, rows=5)  # with the other exact speed-up, in either order
    torch.testing.assert_close(scores(fast, pixels), reference, rtol=0, atol=1e-6)


def test_int8_quantisation_is_close_and_cpu_float32_only(model):
    pixels = torch.randn(4, 2, 3, 32, 32)
    reference = scores(model, pixels)
    quantised = quantize_vision_int8(copy.deepcopy(model))
    linears = [module for module in quantised.clip.vision_model.modules() if type(module).__name__ == "Linear"]
    assert linears and all("quantized" in type(module).__module__ for module in linears)
    error = (scores(quantised, pixels) - reference).abs().max().item()
    assert 0 < error < 5e-3  # it is an approximation, and a close one
    with pytest.raises(ValueError, match="CPU in float32"):
        quantize_vision_int8(copy.deepcopy(model).to(torch.bfloat16))


def test_optimize_for_scoring_refuses_what_cannot_run(model):
    with pytest.raises(ValueError, match="choose from int8"):
        optimize_for_scoring(model, CPU, quantize="int4")
    with pytest.raises(ValueError, match="choose one"):
        optimize_for_scoring(model, CPU, compile=True, quantize="int8")
    assert optimize_for_scoring(model, CPU) == ["class-token last layer", "row-chunked MLPs"]


def test_compiled_tower_pads_batches_to_one_graph_and_is_exact(model):
    torch._dynamo.reset()
    pixels = torch.randn(13, 3, 32, 32)
    reference = scores(model, pixels)
    compiled = compile_vision_tower(copy.deepcopy(model))
    assert compile_vision_tower(compiled) is compiled  # once
    with torch.inference_mode():
        first = compiled(pixel_values=pixels[:6]).scores  # compiles for 6 rows
        short = compiled(pixel_values=pixels[:2]).scores  # padded to 6
        long = compiled(pixel_values=pixels).scores  # 6 + 6 + 1 (padded)
    torch.testing.assert_close(first, reference[:6], rtol=0, atol=1e-5)
    torch.testing.assert_close(short, reference[:2], rtol=0, atol=1e-5)
    torch.testing.assert_close(long, reference, rtol=0, atol=1e-5)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    assert list(compiled.state_dict()) == list(model.state_dict())


@pytest.mark.skipif(not cpu_runtime.tune_malloc(), reason="glibc only")  # (also checks it applies)
def test_tuned_malloc_stops_page_faults_of_large_tensors():
    def faults_of_allocating(megabytes=64, times=5):
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(times):
            torch.ones(megabytes << 18)  # float32: 4 bytes each
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start

    try:
        assert cpu_runtime.default_malloc()
        faults_of_allocating()
        default = faults_of_allocating()  # each tensor is a fresh mmap: every page faults
        assert cpu_runtime.tune_malloc()
        faults_of_allocating()
        tuned = faults_of_allocating()  # the freed heap is reused
        assert default > 5 * (64 << 20) // 4096 * 0.8 and tuned < default / 20, (default, tuned)
    finally:
        cpu_runtime.default_malloc()


def test_malloc_tuning_switches(monkeypatch):
    monkeypatch.delenv(cpu_runtime.MALLOC_TUNING_ENV, raising=False)
    assert cpu_runtime.malloc_tuning_wanted() and not cpu_runtime.malloc_tuning_wanted(flag_off=True)
    monkeypatch.setenv(cpu_runtime.MALLOC_TUNING_ENV, "0")
    assert not cpu_runtime.malloc_tuning_wanted()
    assert "torch threads" in cpu_runtime.describe_cpu()


def test_cli_speed_flags_int8_and_malloc(saved_tiny_model, image_files, tmp_path, monkeypatch, caplog):
    calls = []
    monkeypatch.setattr(cpu_runtime, "tune_malloc", lambda: calls.append(1))
    base = ["score", *image_files, "--model", saved_tiny_model, "--workers", "0"]
    plain, quantised = tmp_path / "plain.csv", tmp_path / "int8.csv"
    assert main([*base, "--output", str(plain)]) == 0
    assert calls == [1]  # on by default on the CPU
    assert main([*base, "--output", str(quantised), "--quantize", "int8", "--no-malloc-tuning"]) == 0
    assert calls == [1]
    rows, rows_int8 = read_csv(plain), read_csv(quantised)
    differences = [abs(float(a["score"]) - float(b["score"])) for a, b in zip(rows, rows_int8)]
    assert len(differences) == len(image_files) and max(differences) < 5e-3
    caplog.set_level(logging.ERROR)
    assert main([*base, "--output", str(plain), "--quantize", "int8", "--resume"]) == 2
    assert "quantize" in caplog.text
    caplog.clear()
    assert main([*base, "--output", str(quantised), "--resume"]) == 2  # and the other way round
    assert "quantize" in caplog.text
    assert main([*base, "--output", str(plain), "--resume"]) == 0  # outputs without the field resume as before
    assert main([*base, "--output", str(plain), "--compile", "--quantize", "int8"]) == 2


def test_compile_pays_off_only_for_long_work():
    assert not compile_pays_off(0.3, 100)  # 30 s of work left: compiling costs more than it saves
    assert compile_pays_off(0.3, 10_000)  # 50 min left
    assert compile_pays_off(1.0, 60, payback_seconds=60)


def test_cli_compiles_by_default_only_when_it_pays_off(saved_tiny_model, image_files, tmp_path, monkeypatch):
    compiled, verdicts = [], []
    monkeypatch.setattr(score_images, "compile_vision_tower", lambda model: compiled.append(model))

    def pays_off(seconds_per_image, images_left):
        verdicts.append((seconds_per_image, images_left))
        return True

    monkeypatch.setattr(score_images, "compile_pays_off", pays_off)
    base = ["score", *image_files, "--model", saved_tiny_model, "--workers", "0", "--batch-size", "2", "--view-policy", "center"]
    assert main([*base, "--output", str(tmp_path / "auto.csv")]) == 0
    assert len(compiled) == 1 and len(verdicts) == 1  # decided once, after the first batch
    seconds, left = verdicts[0]
    assert seconds > 0 and left == len(image_files) - 2
    for flags in (["--no-compile"], ["--quantize", "int8"], ["--dtype", "bfloat16"]):
        assert main([*base, *flags, "--output", str(tmp_path / "other.csv"), "--overwrite"]) == 0, flags
    assert len(compiled) == 1


def test_a_failed_compile_scores_uncompiled(model, monkeypatch, caplog):
    def broken_compile(function, **_):
        def run(**_):
            raise RuntimeError("no C++ compiler found")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    pixels = torch.randn(2, 3, 3, 32, 32)
    reference = scores(model, pixels)
    chunk_vision_mlps(model, rows=7)
    compile_vision_tower(model)
    assert all(layer.mlp.rows > 10**9 for layer in model.clip.vision_model.encoder.layers)  # compiled whole
    with caplog.at_level(logging.WARNING):
        torch.testing.assert_close(scores(model, pixels), reference, rtol=0, atol=1e-6)
        torch.testing.assert_close(scores(model, pixels), reference, rtol=0, atol=1e-6)
    assert caplog.text.count("torch.compile of the vision tower failed") == 1 and "no C++ compiler" in caplog.text


def test_scoring_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cores = len(os.sched_getaffinity(0))
    assert cpu_runtime.scoring_threads(3, 2) == 3  # --threads wins
    assert cpu_runtime.scoring_threads(None, 2) == max(1, cores // 2)  # a launcher's OMP_NUM_THREADS=1: share the cores
    assert cpu_runtime.scoring_threads(None, 1) is None  # one process: the user's or torch's setting stands
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert cpu_runtime.scoring_threads(None, 2) is None


def test_cli_threads_flag(saved_tiny_model, image_files, tmp_path):
    before = torch.get_num_threads()
    try:
        assert main(["score", *image_files, "--model", saved_tiny_model, "--workers", "0", "--threads", "1",
                     "--output", str(tmp_path / "scores.csv")]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_batches_pin_their_views_in_the_dataloaders_pinning_thread(monkeypatch):
    """`pin_memory=True` (GPU scoring) pins only tensors it can see; `Batch` must pin its views
    itself, or every copy to the GPU is a blocking one from pageable memory."""
    from torch.utils.data._utils.pin_memory import pin_memory

    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda tensor, *args: pinned.append(tensor) or tensor.clone())
    views = torch.zeros(2, 1, 4, 4, 3, dtype=torch.uint8)
    batch = pin_memory(score_images.collate_views([(0, views[0], None, 1), (1, None, "bad.jpg: truncated", 0)]))
    assert len(pinned) == 1 and torch.equal(pinned[0], views[:1])
    assert batch.views is not pinned[0] and batch.indices == [0] and batch.errors == [(1, "bad.jpg: truncated")]
    assert pin_memory(score_images.collate_views([(0, None, "x: broken", 0)])).views is None


def test_shard_batches_travel_stacked_once_and_pin_in_the_pinning_thread(monkeypatch):
    """Tar-shard scoring: the worker stacks a batch's views once, items carry no second copy, and
    the stacked views are what the pinning thread pins (no restacking in the main process)."""
    from torch.utils.data._utils.pin_memory import pin_memory

    from modeling_uniqa.scoring.score_shards import Item, collate_items

    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda tensor, *args: pinned.append(tensor) or tensor.clone())
    views = torch.arange(2 * 4 * 4 * 3, dtype=torch.uint8).reshape(2, 1, 4, 4, 3)
    items = [Item(0, 0, "a", views[0]), Item(0, 1, "b", error="b.jpg: truncated"), Item(0, 2, "c", views[1]), Item(0, end=True)]
    collated, batch = pin_memory(collate_items(items))
    assert len(pinned) == 1 and torch.equal(pinned[0], views) and torch.equal(batch.views, views)
    assert batch.indices == [0, 2] and batch.errors == [(1, "b.jpg: truncated")]
    assert all(item.views is None for item in collated)
    assert collate_items([Item(3, end=True)])[1].views is None


def test_decoding_workers_and_batch_size_default_per_device(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    gpu = torch.device("cuda")
    assert device_defaults.decoding_workers(None, CPU) == 2  # decoding takes its cores from the forward
    assert device_defaults.decoding_workers(None, gpu) == 15  # decoding is the whole cost: every core but the scorer's
    assert device_defaults.decoding_workers(None, gpu, local_processes=2) == 7
    assert device_defaults.decoding_workers(None, gpu, local_processes=16) == 2
    assert device_defaults.decoding_workers(5, gpu) == 5 and device_defaults.decoding_workers(0, CPU) == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert device_defaults.decoding_workers(None, gpu) == 16
    assert device_defaults.scoring_batch_size(None, CPU) == 32 and device_defaults.scoring_batch_size(None, gpu) == 256
    assert device_defaults.scoring_batch_size(8, gpu) == 8
    # on the CPU, views of a small tower fill the token rows of 32 ViT-B/16 views; larger ones keep 32
    assert device_defaults.scoring_batch_size(None, CPU, 65) == 96 and device_defaults.scoring_batch_size(None, gpu, 65) == 256
    assert device_defaults.scoring_batch_size(None, CPU, 197) == 32 == device_defaults.scoring_batch_size(None, CPU, 577)
    assert device_defaults.scoring_batch_size(8, CPU, 65) == 8


class NiceValues(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        return os.nice(0)  # this process's nice value


def test_decoding_workers_run_at_the_lowest_priority_on_the_cpu_only(tmp_path):
    assert cpu_runtime.decoding_worker_init(torch.device("cuda")) is None
    init = cpu_runtime.decoding_worker_init(CPU)
    loader = torch.utils.data.DataLoader(NiceValues(), batch_size=None, num_workers=1, worker_init_fn=init)
    assert list(loader) == [min(19, os.nice(0) + cpu_runtime.DECODING_NICENESS)] * 2
    assert os.nice(0) < 19  # the scoring process itself keeps its priority
    paths = [str(tmp_path / "a.png")]
    assert score_images.view_loader(paths, None, "center", 0, 8, 2, CPU).worker_init_fn is init
    assert score_images.view_loader(paths, None, "center", 0, 8, 2, torch.device("cuda")).worker_init_fn is None


def test_score_options_take_the_cpu_batch_size_from_the_models_views(saved_tiny_model, tmp_path):
    from modeling_uniqa.core.default_model import DEFAULT_MODEL
    from modeling_uniqa.core.model_folder import view_tokens
    from modeling_uniqa.scoring.options import ScoreOptions

    assert view_tokens(DEFAULT_MODEL) == 65  # UniQA-Tiny: 64 px views of 8 px patches, and the class token
    assert ScoreOptions().resolved(CPU).batch_size == 96
    assert ScoreOptions(batch_size=5).resolved(CPU).batch_size == 5
    tokens = view_tokens(saved_tiny_model)
    assert ScoreOptions(model=saved_tiny_model).resolved(CPU).batch_size == device_defaults.scoring_batch_size(None, CPU, tokens)
    assert view_tokens(tmp_path) is None and ScoreOptions(model=str(tmp_path)).resolved(CPU).batch_size == 32  # loading says why
