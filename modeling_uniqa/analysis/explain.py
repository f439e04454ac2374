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

import logging
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..core.zero_shot import embed_texts, image_embeds_from_features
from ..modeling_uniqa import UniQAModel
from ..processing_uniqa import UniQAImageProcessor, load_image
from .gradcam import grad_cam, overlay, upsample_map

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


__all__ = [
    "ExplainTarget",
    "Explanation",
    "explain_image",
    "output_paths",
    "prompt_target",
    "score_target",
    "similarity_target",
]
