"""Grad-CAM (Selvaraju et al., ICCV 2017) on UniQA's vision tower, and heat-map overlays.

For a ViT the "feature map" is the patch tokens of the residual stream: with activations `A`
(patches x channels) and the gradient `G` of a scalar target (a prompt's similarity, the score),
the channel weights are the mean gradient over patches, `w = mean_p G[p]`, and the map is
`ReLU(A . w)` reshaped to the patch grid, scaled to [0, 1] and upsampled to the image.

Which tokens: `layer=L` takes the tokens *entering* encoder layer L (default -1, the last).
The tokens leaving the last layer cannot be used: CLIP pools only the class token after it, so
their patch tokens have no gradient at all; the input of the last layer is the latest point
where the patches still feed the output (through its attention).
"""

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..modeling_uniqa import UniQAModel


def grad_cam(model: UniQAModel, pixel_values: torch.Tensor, target: Callable, layer: int = -1) -> tuple:
    """Grad-CAM maps of a batch of views.

    Args:
        model: a UniQA model; its weights are not changed and no parameter gradients are kept.
        pixel_values: CLIP-normalised views `(n, 3, H, W)` at the vision tower's image size.
        target: `raw CLIP image embeddings (n, dim) -> (n,)`, the quantity to explain (see
            `explain.similarity_target` and `explain.score_target`). Each image's value may
            depend on its own row only.
        layer: the encoder layer whose input tokens are weighted (negative counts from the end).

    Returns:
        `(maps, values)`: maps `(n, H / patch, W / patch)` float32 in [0, 1] (all zero where no
        patch pushes the target up), and the target values `(n,)`.
    """
    vision = model.clip.vision_model
    layers = vision.encoder.layers
    if not -len(layers) <= layer < len(layers):
        raise ValueError(f"layer {layer} does not exist: the vision tower has {len(layers)} encoder layers.")
    grid_h = pixel_values.shape[-2] // vision.config.patch_size
    grid_w = pixel_values.shape[-1] // vision.config.patch_size
    captured = []
    handle = layers[layer].register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    weight = model.clip.visual_projection.weight
    # Gradients flow from the pixels, so frozen (requires_grad=False) weights work as well.
    pixels = pixel_values.detach().to(weight.device, weight.dtype).requires_grad_(True)
    try:
        with torch.enable_grad():
            raw = model.clip.get_image_features(pixel_values=pixels).pooler_output
            values = target(raw)
            if values.shape != (pixels.shape[0],):
                raise ValueError(f"the target must give one value per image, shape ({pixels.shape[0]},), got {tuple(values.shape)}.")
            (gradients,) = torch.autograd.grad(values.sum(), captured[0])
    finally:
        handle.remove()
    tokens, gradients = captured[0].detach().float()[:, 1:], gradients.float()[:, 1:]  # drop the class token
    channel_weights = gradients.mean(dim=1, keepdim=True)  # (n, 1, channels)
    maps = F.relu((tokens * channel_weights).sum(-1)).view(-1, grid_h, grid_w)
    peak = maps.flatten(1).max(dim=1).values.clamp_min(torch.finfo(maps.dtype).tiny)
    return (maps / peak[:, None, None]).cpu(), values.detach().float().cpu()


def upsample_map(cam: torch.Tensor, width: int, height: int) -> np.ndarray:
    """A patch-grid map `(h, w)` -> `(height, width)` float32 by bilinear interpolation, in [0, 1]."""
    resized = F.interpolate(cam[None, None].float(), size=(height, width), mode="bilinear", align_corners=False)
    return resized[0, 0].clamp(0, 1).numpy()


def _builtin_ramp(values: np.ndarray) -> np.ndarray:
    """A jet-like colour ramp without matplotlib: dark blue -> cyan -> yellow -> red."""
    stops = np.array([0.0, 0.35, 0.65, 1.0])
    colors = np.array([[0, 0, 143], [0, 255, 255], [255, 255, 0], [200, 0, 0]], dtype=np.float32)
    return np.stack([np.interp(values, stops, colors[:, channel]) for channel in range(3)], axis=-1)


def colorize(cam: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """Values in [0, 1] `(h, w)` -> RGB uint8 `(h, w, 3)`, with matplotlib's `colormap` when
    matplotlib is installed, else a built-in blue-to-red ramp."""
    try:
        import matplotlib
    except ImportError:
        rgb = _builtin_ramp(cam)
    else:
        rgb = matplotlib.colormaps[colormap](cam)[..., :3] * 255.0
    return np.clip(rgb, 0, 255).round().astype(np.uint8)


def overlay(image: Image.Image, cam: np.ndarray, alpha: float = 0.5, colormap: str = "jet") -> Image.Image:
    """The image blended with the coloured map `(image.height, image.width)`: `(1 - alpha) image + alpha heat`."""
    heat = colorize(cam, colormap).astype(np.float32)
    blended = (1.0 - alpha) * np.asarray(image.convert("RGB"), dtype=np.float32) + alpha * heat
    return Image.fromarray(np.clip(blended, 0, 255).round().astype(np.uint8))


__all__ = ["colorize", "grad_cam", "overlay", "upsample_map"]
