"""Image processor of UniQA: decoding, mode conversion, and the test-time views.

PIL + numpy only (no torchvision). Shipped as remote code with every saved model, so it imports
only `torch`, `transformers`, PIL, numpy and its sibling files.
"""

import os

import numpy as np
from PIL import Image, ImageOps
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from .configuration_uniqa import parse_view_policy


class UniQAImageError(ValueError):
    """An input could not be turned into an image; the message names the input and the problem."""


def _describe(source, index=None) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    name = getattr(source, "filename", "") if isinstance(source, Image.Image) else ""
    return name or f"image #{index if index is not None else 0} ({type(source).__name__})"


def _array_to_pil(array: np.ndarray, name: str) -> Image.Image:
    """HxW, HxWxC or CxHxW arrays of uint8 (0-255), uint16 (0-65535) or floats (0-1) -> PIL."""
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)  # CHW -> HWC
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise UniQAImageError(f"{name}: expected an HxW, HxWx3 or HxWx4 array, got shape {array.shape}.")
    if array.dtype == np.uint8:
        pass
    elif array.dtype == np.uint16:
        array = (array.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise UniQAImageError(f"{name}: the float array holds NaN or infinite values.")
        if array.min() < 0 or array.max() > 1:
            raise UniQAImageError(
                f"{name}: float arrays must hold values in [0, 1], got [{array.min():.3g}, {array.max():.3g}]."
            )
        array = (array * 255.0).round().astype(np.uint8)
    else:
        raise UniQAImageError(f"{name}: unsupported array dtype {array.dtype} (use uint8, uint16 or float in [0, 1]).")
    return Image.fromarray(np.ascontiguousarray(array))


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB. Transparency is composited on white; 16/32-bit integer
    greyscale (`I;16*`, `I`) is scaled from 0-65535; float (`F`) is read as 0-1."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        array = np.asarray(image, dtype=np.float32)
        scale = 255.0 if image.mode == "F" else 255.0 / 65535.0
        return Image.fromarray(np.clip(array * scale, 0, 255).round().astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(source, index=None) -> Image.Image:
    """A path, PIL image or numpy array -> an upright 8-bit RGB PIL image.

    EXIF orientation is applied. Unreadable, truncated or empty files raise `UniQAImageError`
    naming the file.
    """
    name = _describe(source, index)
    try:
        if isinstance(source, (str, os.PathLike)):
            if not os.path.isfile(source):
                raise UniQAImageError(f"{name}: no such file.")
            if os.path.getsize(source) == 0:
                raise UniQAImageError(f"{name}: the file is empty (0 bytes).")
            with Image.open(source) as opened:
                opened.load()  # decode now: truncated files fail here, not later
                image = ImageOps.exif_transpose(opened)  # an upright copy, independent of the file
        elif isinstance(source, Image.Image):
            source.load()
            image = ImageOps.exif_transpose(source)
        elif isinstance(source, np.ndarray):
            image = _array_to_pil(source, name)
        else:
            raise UniQAImageError(f"{name}: expected a file path, PIL image or numpy array, got {type(source).__name__}.")
        image = to_rgb(image)
    except UniQAImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise UniQAImageError(f"{name}: cannot read image ({type(error).__name__}: {error}).") from error
    if image.width < 1 or image.height < 1:
        raise UniQAImageError(f"{name}: the image has no pixels ({image.width}x{image.height}).")
    return image


def crop_boxes(width: int, height: int, crop: int, policy: str, seed: int) -> list:
    """`(left, top, flip)` of each view of a `width` x `height` image for a view policy.

    Needs `width, height >= crop`. `random<N>` draws N positions from a generator seeded with
    `seed` for this image alone, so a score never depends on the other images of a batch.
    """
    kind, count = parse_view_policy(policy)
    right, bottom = width - crop, height - crop
    center = (right // 2, bottom // 2)
    if kind == "random":
        rng = np.random.default_rng(seed)
        lefts = rng.integers(0, right + 1, size=count)
        tops = rng.integers(0, bottom + 1, size=count)
        return [(int(left), int(top), False) for left, top in zip(lefts, tops)]
    if kind == "center":
        return [(*center, False)]
    corners = [(0, 0), (right, 0), (0, bottom), (right, bottom), center]
    boxes = [(left, top, False) for left, top in corners]
    if kind == "ten_crop":
        boxes += [(left, top, True) for left, top in corners]
    return boxes


class UniQAImageProcessor(BaseImageProcessor):
    r"""
    Turns images into the views UniQA scores: `pixel_values` of shape `(batch, views, 3, crop, crop)`.

    Steps per image: decode (paths, PIL images or numpy arrays), apply the EXIF orientation,
    convert any mode to 8-bit RGB, optionally resize the short side to `shortest_edge`, upscale
    images whose short side is below `crop_size` to exactly `crop_size` (aspect kept), cut the views
    of `view_policy`, scale to [0, 1] and normalise with the OpenAI CLIP mean and std.

    Args:
        crop_size (`int`, *optional*, defaults to 224): side of the square views.
        shortest_edge (`int`, *optional*): resize the short side to this first; `None` keeps the
            native resolution (the authors' protocol: crops of the full image).
        view_policy (`str`, *optional*, defaults to `"random10"`): see `UniQAConfig.view_policy`.
        view_seed (`int`, *optional*, defaults to 123): seed of the `random<N>` crop positions.
        image_mean, image_std (`list[float]`, *optional*): normalisation (OpenAI CLIP's).
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        crop_size: int = 224,
        shortest_edge: int | None = None,
        view_policy: str = "random10",
        view_seed: int = 123,
        image_mean=None,
        image_std=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        parse_view_policy(view_policy)
        self.crop_size = int(crop_size)
        self.shortest_edge = shortest_edge
        self.view_policy = view_policy
        self.view_seed = int(view_seed)
        self.image_mean = list(image_mean if image_mean is not None else OPENAI_CLIP_MEAN)
        self.image_std = list(image_std if image_std is not None else OPENAI_CLIP_STD)

    def _resize_short_side(self, image: Image.Image, target: int) -> Image.Image:
        scale = target / min(image.size)
        size = (max(target, round(image.width * scale)), max(target, round(image.height * scale)))
        return image.resize(size, Image.BICUBIC)

    def views(self, image: Image.Image, view_policy: str | None = None, view_seed: int | None = None) -> np.ndarray:
        """An RGB PIL image -> uint8 views (views, crop, crop, 3)."""
        policy = view_policy or self.view_policy
        crop = self.crop_size
        if self.shortest_edge:
            image = self._resize_short_side(image, self.shortest_edge)
        if policy == "resize":
            return np.asarray(image.resize((crop, crop), Image.BICUBIC))[None]
        if min(image.size) < crop:
            image = self._resize_short_side(image, crop)
        pixels = np.asarray(image)  # (H, W, 3)
        seed = self.view_seed if view_seed is None else view_seed
        views = []
        for left, top, flip in crop_boxes(image.width, image.height, crop, policy, seed):
            view = pixels[top : top + crop, left : left + crop]
            views.append(view[:, ::-1] if flip else view)
        return np.stack(views)

    def normalize_views(self, views: np.ndarray) -> np.ndarray:
        """uint8 (..., crop, crop, 3) -> float32 (..., 3, crop, crop), CLIP-normalised."""
        mean = np.asarray(self.image_mean, dtype=np.float32) * 255.0
        inv_std = 1.0 / (np.asarray(self.image_std, dtype=np.float32) * 255.0)
        pixels = (views.astype(np.float32) - mean) * inv_std
        return np.ascontiguousarray(np.moveaxis(pixels, -1, -3))

    def preprocess(self, images, view_policy: str | None = None, view_seed: int | None = None, return_tensors="pt", **kwargs) -> BatchFeature:
        """One image or a list (paths, PIL images, numpy arrays) -> `pixel_values`
        `(batch, views, 3, crop, crop)`. Bad inputs raise `UniQAImageError` naming them."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        batch = np.stack(
            [self.views(load_image(image, index), view_policy, view_seed) for index, image in enumerate(images)]
        )
        return BatchFeature(data={"pixel_values": self.normalize_views(batch)}, tensor_type=return_tensors)

    def __call__(self, images, **kwargs) -> BatchFeature:
        return self.preprocess(images, **kwargs)


UniQAImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = ["UniQAImageProcessor", "UniQAImageError", "load_image", "to_rgb", "crop_boxes"]
