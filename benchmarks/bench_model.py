"""UniQA scoring speed against the bare transformers CLIP vision tower, at ViT-B/16 size with random weights.

    python benchmarks/bench_model.py [--images 8] [--views 10] [--repeats 3] [--no-compile] [--bf16 auto|on|off]

One process, runs interleaved (so drift hits every variant alike), on a batch of `--images` x
`--views` 224x224 views (80 by default):
- `bare`: `clip.get_image_features` as transformers runs it by default (glibc's default malloc);
- `uniqa`: `UniQAModel` scoring as `uniqa score` runs it on the CPU by default (vision tower +
  adapter + 4 prompt groups; `cpu_runtime.tune_malloc` + row-chunked MLPs);
- `uniqa --compile`: the same with `torch.compile` of the tower;
- `uniqa --quantize int8`: int8 dynamic quantisation of the tower.
Prints views/s, each variant's speed-up over `bare`, and its largest score difference from the
unoptimised float32 UniQA forward (target 1e-5 for the exact options). Targets: `uniqa` >= 1.3x
`bare` in float32; in bf16 >= 2.6x `bare` float32 (where the CPU has native bf16: `--bf16 auto`
measures bf16 only there, since emulated bf16 is slower than float32). Finally counts text-tower
calls during `--count-batches` scoring batches (target 0: prompt embeddings are constants).
"""

import argparse
import copy
import statistics
import time

import torch
from transformers import CLIPConfig

from modeling_uniqa import UniQAConfig, UniQAModel
from modeling_uniqa.clip_tokenizer import build_clip_tokenizer
from modeling_uniqa.cpu_runtime import default_malloc, describe_cpu, has_native_bf16, tune_malloc
from modeling_uniqa.inference_speed import optimize_for_scoring

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
    """Median views/s of each `fn(pixels)`; runs alternate so drift hits all of them alike."""
    times = {name: [] for name in fns}
    views = pixels.shape[0] * (pixels.shape[1] if pixels.dim() == 5 else 1)
    with torch.inference_mode():
        for _ in range(warmup):  # oneDNN builds its kernels on the first calls
            for fn in fns.values():
                fn(pixels)
        for _ in range(repeats):
            for name, fn in fns.items():
                start = time.perf_counter()
                fn(pixels)
                times[name].append(time.perf_counter() - start)
    return {name: views / statistics.median(t) for name, t in times.items()}


def with_malloc(tuned: bool, fn):
    """`fn` run under glibc's default malloc (`tuned=False`, as a plain transformers process) or tuned."""

    def run(pixels):
        tune_malloc() if tuned else default_malloc()
        return fn(pixels)

    return run


def scorer(model, dtype=torch.float32, **options) -> UniQAModel:
    """A copy of `model` in `dtype`, optimised as `uniqa score` would with `options`."""
    fast = copy.deepcopy(model).to(dtype)
    optimize_for_scoring(fast, CPU, **options)
    return fast


def main(args):
    torch.manual_seed(0)
    model = UniQAModel(UniQAConfig(clip_config=CLIPConfig(**VIT_B16).to_dict(), prompt_groups="natural")).eval()
    model.set_prompts(None, build_clip_tokenizer())
    print(f"torch {torch.__version__}; {describe_cpu()}")
    print(f"batch: {args.images} images x {args.views} views of 224x224; median of {args.repeats} interleaved runs")
    pixels = torch.randn(args.images, args.views, 3, 224, 224)

    def bare(model):
        return lambda x: model.clip.get_image_features(pixel_values=x.flatten(0, 1)).pooler_output

    def score(model):
        return lambda x: model(pixel_values=x).scores

    with torch.inference_mode():
        reference = model(pixel_values=pixels).scores
    variants = {"bare": (with_malloc(False, bare(model)), None), "uniqa": (with_malloc(True, score(scorer(model))), "exact")}
    if not args.no_compile:
        compiled = scorer(model, compile=True)
        start = time.perf_counter()
        with torch.inference_mode():
            compiled(pixel_values=pixels)
        print(f"torch.compile of the tower: {time.perf_counter() - start:.0f} s (first batch, once per process)")
        variants["uniqa --compile"] = (with_malloc(True, score(compiled)), "exact")
    if not args.no_int8:
        variants["uniqa --quantize int8"] = (with_malloc(True, score(scorer(model, quantize="int8"))), "int8")
    bf16 = args.bf16 == "on" or (args.bf16 == "auto" and has_native_bf16())
    if bf16:
        bare_bf16 = bare(copy.deepcopy(model).to(torch.bfloat16))
        variants["bare bf16"] = (with_malloc(False, lambda x: bare_bf16(x.bfloat16())), None)
        variants["uniqa bf16"] = (with_malloc(True, score(scorer(model, torch.bfloat16))), "bf16")

    rates = time_interleaved({name: fn for name, (fn, _) in variants.items()}, pixels, args.repeats)
    base = rates["bare"]
    for name, (fn, kind) in variants.items():
        line = f"{name:>22}: {rates[name]:6.2f} views/s  {rates[name] / base:5.2f}x bare fp32"
        if kind is not None:
            with torch.inference_mode():
                error = (fn(pixels).float() - reference).abs().max().item()
            line += f"  | max score diff vs unoptimised fp32: {error:.1e}" + (" (target 1e-5)" if kind == "exact" else "")
        print(line)
    print(f"target: uniqa >= 1.3x bare in fp32 -> {rates['uniqa'] / base:.2f}x")
    if bf16:
        print(f"target: uniqa bf16 >= 2.6x bare fp32 -> {rates['uniqa bf16'] / base:.2f}x")
    else:
        print("bf16: not measured: this CPU has no native bf16 (AVX512-BF16/AMX); emulated bf16 runs slower than fp32 (--bf16 on to see)")
    default_malloc()

    calls = []
    hook = model.clip.text_model.register_forward_hook(lambda *_: calls.append(1))
    with torch.inference_mode():
        for _ in range(args.count_batches):
            model(pixel_values=pixels[:1, :1])
    hook.remove()
    print(f"text tower calls across {args.count_batches} scoring batches: {len(calls)} (target 0)")


if __name__ == "__main__":
    main(parse_args())
