"""`uniqa explain`: the command line of `modeling_uniqa.analysis.explain`."""

import argparse
import logging
import os

import torch

from ..analysis.contact_sheet import display_path
from ..analysis.explain import explain_image, output_paths, prompt_target, score_target
from ..core.atomic_files import atomic_write
from ..core.default_model import DEFAULT_MODEL
from ..core.model_folder import load_model
from ..core.runtime import DTYPES
from ..core.zero_shot import EMBEDDING_KINDS
from ..errors import UsageError
from ..processing_uniqa import UniQAImageError
from ..scoring.score_images import expand_inputs

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "Exit code: 0 when at least one image was explained, 1 when none could be, 2 for usage errors."
    parser.add_argument("inputs", nargs="+", metavar="IMAGE", help="Image files, folders, glob patterns or .txt/.lst path lists.")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="A UniQA model folder (e.g. written by `uniqa convert`); default: UniQA-Tiny, shipped with the package.")
    parser.add_argument("--prompt", action="append", default=[], help="Explain this text's similarity, e.g. \"blurry image\"; repeatable.")
    parser.add_argument("--score", action="store_true", help="Explain the model's own score (adapter + multi-cue head).")
    parser.add_argument("--output", required=True, help="Folder for the PNGs.")
    parser.add_argument("--embedding", choices=EMBEDDING_KINDS, default="adapted", help="Image embedding for --prompt: adapted (I', default) or clip.")
    parser.add_argument("--layer", type=int, default=-1, help="Weight the tokens entering this encoder layer (default -1: the last).")
    parser.add_argument("--alpha", type=float, default=0.5, help="Heat-map opacity in the overlay (default 0.5).")
    parser.add_argument("--colormap", default="jet", help="A matplotlib colormap name (default jet; a built-in ramp without matplotlib).")
    parser.add_argument("--overlay-only", action="store_true", help="Write the overlay alone, not beside the original.")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="Weights and compute dtype (default float32).")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: a GPU if there is one, else the CPU.")
    parser.add_argument("--tokenizer", default=None, help="Tokenizer folder for --prompt (default: the model folder).")


def _check_colormap(name: str) -> None:
    try:
        import matplotlib
    except ImportError:
        return  # the built-in ramp is used whatever the name
    if name not in matplotlib.colormaps:
        raise UsageError(f"--colormap {name}: not a matplotlib colormap (e.g. jet, inferno, viridis).")


def run(args) -> int:
    if not args.prompt and not args.score:
        logger.error("Choose what to explain: --prompt TEXT (repeatable) and/or --score.")
        return 2
    if not 0.0 <= args.alpha <= 1.0:
        logger.error("--alpha must be in [0, 1], got %s.", args.alpha)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        logger.error("--device cuda: no CUDA device is available here.")
        return 2
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    try:
        _check_colormap(args.colormap)
        output_dir = os.path.abspath(args.output)
        # heat maps written below an input folder by an earlier run are not inputs
        paths = [path for path in expand_inputs(args.inputs).paths if os.path.commonpath([path, output_dir]) != output_dir]
        if not paths:
            raise UsageError(f"every input lies inside --output {args.output}: nothing to explain.")
        model, processor, tokenizer = load_model(args.model, dtype=DTYPES[args.dtype], device=device, tokenizer_dir=args.tokenizer, need_tokenizer=bool(args.prompt))
        targets = [prompt_target(model, tokenizer, prompt, args.embedding) for prompt in args.prompt]
        if args.score:
            targets.append(score_target(model))
    except (UsageError, ValueError) as error:
        logger.error("%s", error)
        return 2
    slugs = []
    for target in targets:  # distinct file names for prompts that slug alike
        slug, number = target.slug, 2
        while slug in slugs:
            slug, number = f"{target.slug}-{number}", number + 1
        target.slug = slug
        slugs.append(slug)
    destinations = output_paths(paths, slugs, output_dir)
    explained = 0
    for path in paths:
        try:
            explanations = explain_image(model, processor, path, targets, layer=args.layer)
        except UniQAImageError as error:
            logger.warning("Not explained: %s", error)
            continue
        except ValueError as error:  # e.g. a --layer the model does not have: the same for every image
            logger.error("%s", error)
            return 2
        for target, explanation in zip(targets, explanations):
            destination = destinations[(path, target.slug)]
            os.makedirs(os.path.dirname(destination), exist_ok=True)
            picture = explanation.picture(side_by_side=not args.overlay_only, alpha=args.alpha, colormap=args.colormap)
            atomic_write(destination, lambda temporary, picture=picture: picture.save(temporary, format="PNG"))
            print(f"{display_path(path)}\t{target.name}\t{explanation.value:.4f}\t{display_path(destination)}")
        explained += 1
    logger.info("Explained %d of %d images into %s.", explained, len(paths), args.output)
    return 0 if explained else 1
