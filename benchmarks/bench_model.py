"""UniQA scoring speed against the bare transformers CLIP vision tower, at ViT-B/16 size with random weights.

    python benchmarks/bench_model.py [--images 8] [--views 10] [--repeats 3] [--no-compile] [--bf16 auto|on|off]

On a batch of `--images` x `--views` 224x224 views (80 by default), runs alternate so drift hits
every variant alike:
- `bare`: `clip.get_image_features` as a plain transformers process runs it: in a child process
  that never touches malloc (the allocator is per process, and each variant must run in its own
  steady state);
- `uniqa`: `UniQAModel` scoring as `uniqa score` runs it on the CPU by default (vision tower +
  adapter + 4 prompt groups; `cpu_runtime.tune_malloc`, the class-token last layer, row-chunked MLPs);
- `uniqa --compile`: the same with `torch.compile` of the tower (what `uniqa score` does by default
  when the first batch shows at least 10 minutes of work left);
- `uniqa --quantize int8`: int8 dynamic quantisation of the tower.
Prints views/s, each variant's speed-up over `bare`, and its largest score difference from the
unoptimised float32 UniQA forward (target 1e-5 for the exact options). Targets: `uniqa` >= 1.3x
`bare` in float32; in bf16 >= 2.6x `bare` float32 (where the CPU has native bf16: `--bf16 auto`
measures bf16 only there, since emulated bf16 is slower than float32). Finally counts text-tower
calls during `--count-batches` scoring batches (target 0: prompt embeddings are constants).
"""

import argparse
import copy
import multiprocessing
import statistics
import time

import torch
from transformers import CLIPConfig, CLIPModel

from modeling_uniqa import UniQAConfig, UniQAModel
from modeling_uniqa.clip_tokenizer import build_clip_tokenizer
from modeling_uniqa.core.cpu_runtime import describe_cpu, has_native_bf16, tune_malloc
from modeling_uniqa.core.inference_speed import optimize_for_scoring

VIT_B16 = {
    "vision_config": {"image_size": 224, "patch_size": 16, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12, "hidden_act": "quick_gelu"},
    "text_config": {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 8, "hidden_act": "quick_gelu", "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407},
    "projection_dim": 512,
}
CPU = torch.device("cpu")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8, help="images per batch")
    parser.add_argument("--views", type=int, default=10, help="views per image")
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards per variant (median reported)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant (about 1 min of compiling)")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 variant")
    parser.add_argument("--bf16", choices=("auto", "on", "off"), default="auto", help="bf16 variants: auto = where the CPU has native bf16")
    parser.add_argument("--count-batches", type=int, default=20, help="scoring batches over which text-tower calls are counted")
    return parser.parse_args(argv)


def time_interleaved(fns: dict, pixels, repeats, warmup=1) -> dict:
    """Median views/s of each `fn(pixels)`; runs alternate so drift hits all of them alike. A
    `fn` may time itself elsewhere and return its own seconds (a `float`)."""
    times = {name: [] for name in fns}
    views = pixels.shape[0] * (pixels.shape[1] if pixels.dim() == 5 else 1)
    with torch.inference_mode():
        for _ in range(warmup):  # oneDNN builds its kernels on the first calls
            for fn in fns.values():
                fn(pixels)
        for _ in range(repeats):
            for name, fn in fns.items():
                start = time.perf_counter()
                result = fn(pixels)
                times[name].append(result if isinstance(result, float) else time.perf_counter() - start)
    return {name: views / statistics.median(t) for name, t in times.items()}


def _bare_tower_process(connection, shape):
    """The baseline, in its own process with glibc's malloc untouched: for each dtype name
    received, one `get_image_features` forward of `shape` random pixels; sends its seconds."""
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(**VIT_B16)).eval()
    towers = {"float32": clip}
    pixels = torch.randn(*shape)
    while (dtype := connection.recv()) is not None:
        tower = towers.setdefault(dtype, copy.deepcopy(clip).to(getattr(torch, dtype)))
        with torch.inference_mode():
            start = time.perf_counter()
            tower.get_image_features(pixel_values=pixels.to(tower.dtype))
            connection.send(time.perf_counter() - start)


class BareTower:
    """`bare(dtype)`: a function that runs one forward in the baseline process and returns its seconds."""

    def __init__(self, shape):
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_bare_tower_process, args=(child, shape), daemon=True)
        self.process.start()

    def __call__(self, dtype: str):
        def run(_pixels) -> float:
            self.connection.send(dtype)
            return self.connection.recv()

        return run

    def close(self):
        self.connection.send(None)
        self.process.join()


def scorer(model, dtype=torch.float32, **options) -> UniQAModel:
    """A copy of `model` in `dtype`, optimised as `uniqa score` would with `options`."""
    fast = copy.deepcopy(model).to(dtype)
    optimize_for_scoring(fast, CPU, **options)
    return fast


def main(args):
    tune_malloc()  # as `uniqa score` does on the CPU, before anything large is allocated
    pixels = torch.randn(args.images, args.views, 3, 224, 224)
    bare = BareTower((args.images * args.views, 3, 224, 224))
    torch.manual_seed(0)
    model = UniQAModel(UniQAConfig(clip_config=CLIPConfig(**VIT_B16).to_dict(), prompt_groups="natural")).eval()
    model.set_prompts(None, build_clip_tokenizer())
    print(f"torch {torch.__version__}; {describe_cpu()}")
    print(f"batch: {args.images} images x {args.views} views of 224x224; median of {args.repeats} interleaved runs")

    def score(model):
        return lambda x: model(pixel_values=x).scores

    with torch.inference_mode():
        reference = model(pixel_values=pixels).scores
    variants = {"bare": (bare("float32"), None), "uniqa": (score(scorer(model)), "exact")}
    if not args.no_compile:
        compiled = scorer(model, compile=True)
        start = time.perf_counter()
        with torch.inference_mode():
            compiled(pixel_values=pixels)
        print(f"torch.compile of the tower: {time.perf_counter() - start:.0f} s (first batch, once per process)")
        variants["uniqa --compile"] = (score(compiled), "exact")
    if not args.no_int8:
        variants["uniqa --quantize int8"] = (score(scorer(model, quantize="int8")), "int8")
    bf16 = args.bf16 == "on" or (args.bf16 == "auto" and has_native_bf16())
    if bf16:
        variants["bare bf16"] = (bare("bfloat16"), None)
        variants["uniqa bf16"] = (score(scorer(model, torch.bfloat16)), "bf16")

    rates = time_interleaved({name: fn for name, (fn, _) in variants.items()}, pixels, args.repeats)
    bare.close()
    base = rates["bare"]
    for name, (fn, kind) in variants.items():
        line = f"{name:>22}: {rates[name]:6.2f} views/s  {rates[name] / base:5.2f}x bare fp32"
        if kind is not None:
            with torch.inference_mode():
                error = (fn(pixels).float() - reference).abs().max().item()
            line += f"  | max score diff vs unoptimised fp32: {error:.1e}" + (" (target 1e-5)" if kind == "exact" else "")
        print(line)
    compiled_note = f", {rates['uniqa --compile'] / base:.2f}x compiled (the default from 10 min of work on)" if "uniqa --compile" in rates else ""
    print(f"target: uniqa >= 1.3x bare in fp32 -> {rates['uniqa'] / base:.2f}x uncompiled{compiled_note}")
    if bf16:
        print(f"target: uniqa bf16 >= 2.6x bare fp32 -> {rates['uniqa bf16'] / base:.2f}x")
    elif args.bf16 == "off":
        print("bf16: not measured (--bf16 off)")
    else:
        print("bf16: not measured: this CPU has no native bf16 (AVX512-BF16/AMX); emulated bf16 runs slower than fp32 (--bf16 on to see)")

    calls = []
    hook = model.clip.text_model.register_forward_hook(lambda *_: calls.append(1))
    with torch.inference_mode():
        for _ in range(args.count_batches):
            model(pixel_values=pixels[:1, :1])
    hook.remove()
    print(f"text tower calls across {args.count_batches} scoring batches: {len(calls)} (target 0)")


if __name__ == "__main__":
    main(parse_args())
