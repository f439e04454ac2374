"""`uniqa explain`: Grad-CAM heat maps of where UniQA looks (Fig. 5 of the paper), as PNGs.

    uniqa explain photo.jpg shots/ --model uniqa-zero-shot --prompt "blurry image" --output cams/
    uniqa explain photo.jpg --model uniqa-koniq --score --prompt "noisy image" --output cams/

For each image and each target (every `--prompt`, and `--score`) one PNG is written into
`--output`, named `<image name>.<target>.png` (folders of the inputs mirrored below their common
parent, and the suffix kept where two names differ only by it, so equal names never collide): the original and the heat-map overlay side by side
(`--overlay-only` for the overlay alone), at the original's size.

- The image is seen whole: resized to the model's input size (the `resize` view), and the map of
  the patch grid is upsampled back to the original size.
- `--prompt TEXT`: the cosine similarity of the image embedding (`--embedding adapted`, the
  model's `I'`, or `clip`) with the text, tokenised with the model folder's tokenizer.
- `--score`: the model's own score (adapter + multi-cue head over its prompt groups).
- Runs on the CPU (about a second per image and target for ViT-B/16) and is deterministic.
- Exit code: 0 when at least one image was explained, 1 when none could be, 2 for usage errors.
"""

import argparse
import logging
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .atomic_files import atomic_write
from .contact_sheet import display_path
from .default_model import DEFAULT_MODEL
from .gradcam import grad_cam, overlay, upsample_map
from .modeling_uniqa import UniQAModel
from .processing_uniqa import UniQAImageError, UniQAImageProcessor, load_image
from .score_images import DTYPES, UsageError, expand_inputs
from .zero_shot import EMBEDDING_KINDS, embed_texts, image_embeds_from_features, load_model_folder

logger = logging.getLogger(__name__)


@dataclass
class ExplainTarget:
    """A scalar to explain: `name` for people, `slug` for file names, and `function`: raw CLIP
    image features `(n, dim)` -> `(n,)`. New kinds (e.g. a named head) are new constructors."""

    name: str
    slug: str
    function: Callable


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "prompt"


def similarity_target(model: UniQAModel, text_embed: torch.Tensor, name: str, embedding: str = "adapted") -> ExplainTarget:
    """The cosine similarity of the image embedding of kind `embedding` with an L2-normalised text
    embedding `(dim,)` (any direction of the joint space)."""
    text_embed = text_embed.detach().float().reshape(-1)

    def function(features):
        return image_embeds_from_features(model, features, embedding) @ text_embed.to(features.device)

    return ExplainTarget(f"prompt: {name}", _slug(name), function)


def prompt_target(model: UniQAModel, tokenizer, prompt: str, embedding: str = "adapted") -> ExplainTarget:
    """`similarity_target` of a text prompt, embedded by the model's text tower."""
    return similarity_target(model, embed_texts(model, tokenizer, [prompt])[0], prompt, embedding)


def score_target(model: UniQAModel) -> ExplainTarget:
    """The model's score of a view: adapter, eq. 7 level probabilities over its prompt groups,
    their expected level score, averaged over the groups (eq. 8)."""

    def function(features):
        return model.score_embeddings(features).scores

    return ExplainTarget("score", "score", function)


@dataclass
class Explanation:
    """Grad-CAM of one image for one target: `heatmap` `(height, width)` in [0, 1] at the image's size."""

    source: object
    target: str
    value: float
    heatmap: np.ndarray
    image: Image.Image

    def picture(self, side_by_side: bool = True, alpha: float = 0.5, colormap: str = "jet") -> Image.Image:
        """The overlay, or the original and the overlay side by side."""
        blended = overlay(self.image, self.heatmap, alpha=alpha, colormap=colormap)
        if not side_by_side:
            return blended
        panel = Image.new("RGB", (2 * self.image.width, self.image.height))
        panel.paste(self.image, (0, 0))
        panel.paste(blended, (self.image.width, 0))
        return panel


def explain_image(model: UniQAModel, processor: UniQAImageProcessor, image, targets: list, layer: int = -1) -> list:
    """Grad-CAM explanations of one image (path, PIL image or array) for each target.

    Raises `UniQAImageError` naming the input when it cannot be read."""
    picture = load_image(image)
    views = processor.views(picture, "resize")  # the whole image at the model's input size
    pixels = torch.from_numpy(processor.normalize_views(views))  # (1, 3, crop, crop)
    explanations = []
    for target in targets:
        maps, values = grad_cam(model, pixels, target.function, layer=layer)
        heatmap = upsample_map(maps[0], picture.width, picture.height)
        explanations.append(Explanation(image, target.name, float(values[0]), heatmap, picture))
    return explanations


def output_paths(paths: list, slugs: list, output_dir: str) -> dict:
    """`{(path, slug): png path}`: `<output_dir>/<path relative to the inputs' common folder>` with
    the suffix replaced by `.<slug>.png`; where that would give two inputs one name (`a.jpg` and
    `a.png`), they keep their suffix (`a.jpg.<slug>.png`, `a.png.<slug>.png`)."""
    common = os.path.commonpath([os.path.dirname(path) for path in paths]) if paths else ""
    relative = {path: os.path.relpath(path, common) for path in paths}
    names = {path: os.path.splitext(name)[0] for path, name in relative.items()}
    while True:  # a kept suffix may meet another stem (`a.jpg.png`): repeat until all differ
        counts = Counter(names.values())
        clashing = [path for path, name in names.items() if counts[name] > 1 and name != relative[path]]
        if not clashing:
            break
        for path in clashing:
            names[path] = relative[path]
    return {(path, slug): os.path.join(output_dir, f"{names[path]}.{slug}.png") for path in paths for slug in slugs}


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
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
        model, processor, tokenizer = load_model_folder(args.model, args.tokenizer, DTYPES[args.dtype], device, need_tokenizer=bool(args.prompt))
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


__all__ = [
    "ExplainTarget",
    "Explanation",
    "explain_image",
    "output_paths",
    "prompt_target",
    "score_target",
    "similarity_target",
]
