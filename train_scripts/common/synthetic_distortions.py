"""Synthetic distortions at five levels, numbered as KADID-10k numbers them (PIL + numpy + scipy).

``distort(image, code, level, rng, jitter)`` applies KADID distortion ``code`` (see
:data:`data_builders.distortions.KADID_DISTORTIONS`) at ``level`` 1 (mildest) .. 5. Each level has
an anchor parameter (:data:`LEVEL_PARAMETERS`); with ``jitter > 0`` the parameter is drawn between
the anchors of the neighbouring levels (``level +- jitter``, interpolated on a log scale), so a
training corpus covers settings between the anchors, not five fixed points.

Everything works at the image's native resolution: a blur of sigma 2 is 2 pixels of *this*
image, which is what a model that looks at native-resolution crops sees.

Several distortions exist in more than one implementation (:data:`IMPLEMENTATIONS`: PIL's
box-approximated Gaussian blur or a true one, JPEG's chroma subsampling, noise per channel or one
grey field, the filter that shrinks a pixelated picture). A model trained on one learns that
implementation's traces: the shipped UniQA-Tiny, trained on PIL's blur, ranks scipy's Gaussian blur
of the same sigmas at SRCC 0.64 and PIL's at 0.73. ``distort(..., vary_implementation=True)`` draws
one implementation per image, so a training corpus shows the distortion rather than one library's
version of it.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter
from scipy import ndimage

# Anchor parameter of levels 1..5, per KADID code. Units in each function's comment.
LEVEL_PARAMETERS = {
    "01": (0.5, 0.9, 1.4, 2.1, 3.2),  # Gaussian blur: sigma, pixels
    "02": (1.0, 1.5, 2.2, 3.2, 4.6),  # lens blur: disk radius, pixels
    "03": (3.0, 5.0, 8.0, 12.0, 17.0),  # motion blur: line length, pixels
    "07": (0.75, 0.55, 0.36, 0.18, 0.02),  # desaturation: colour factor
    "09": (30.0, 60.0, 110.0, 200.0, 380.0),  # JPEG2000: compression ratio
    "10": (45.0, 28.0, 17.0, 10.0, 5.0),  # JPEG: quality
    "11": (4.0, 8.0, 13.0, 20.0, 30.0),  # white noise: sigma, grey levels
    "13": (0.004, 0.01, 0.02, 0.04, 0.07),  # impulse noise: fraction of pixels
    "14": (0.04, 0.08, 0.13, 0.2, 0.3),  # multiplicative (speckle) noise: sigma
    "16": (0.8, 0.65, 0.5, 0.38, 0.28),  # brighten: gamma
    "17": (1.25, 1.55, 1.95, 2.45, 3.1),  # darken: gamma
    "21": (1.6, 2.2, 3.0, 4.2, 6.0),  # pixelate: downscale factor
    "22": (24.0, 14.0, 9.0, 6.0, 4.0),  # quantization: levels per channel
    "24": (1.0, 2.0, 3.0, 4.5, 6.5),  # high sharpen: unsharp-mask amount
    "25": (0.75, 0.57, 0.42, 0.3, 0.2),  # contrast loss: contrast factor
}
CODES = tuple(LEVEL_PARAMETERS)
LEVELS = 5

# The implementations a distortion is drawn from with `vary_implementation`; the first is the
# default (the one used without it).
IMPLEMENTATIONS = {
    "01": ("pil", "gaussian"),  # PIL's three-box approximation, or a true Gaussian (scipy)
    "10": ("4:2:0", "4:2:2", "4:4:4"),  # chroma subsampling
    "11": ("per_channel", "grey"),  # independent noise per channel, or one field on all three
    "14": ("per_channel", "grey"),
    "21": ("box", "bilinear", "bicubic", "lanczos", "nearest"),  # the filter that shrinks the picture
}
_JPEG_SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}
_RESAMPLE = {"box": Image.BOX, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS, "nearest": Image.NEAREST}


def level_parameter(code: str, level: float) -> float:
    """The parameter of ``code`` at a (possibly fractional) level, interpolated on a log scale
    between anchors and extrapolated by the end anchors' ratio below 1 / above 5."""
    anchors = np.log(np.asarray(LEVEL_PARAMETERS[code], dtype=np.float64))
    position = float(level) - 1.0
    low = int(min(max(math.floor(position), 0), LEVELS - 2))
    fraction = position - low
    return float(np.exp(anchors[low] + fraction * (anchors[low + 1] - anchors[low])))


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32)


def _image(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def _encode(image: Image.Image, **options) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, **options)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _line_kernel(length: float, angle: float) -> np.ndarray:
    size = int(math.ceil(length)) | 1
    canvas = Image.new("F", (size * 4, size * 4), 0.0)
    centre, half = size * 2, length * 2
    dx, dy = half * math.cos(angle), half * math.sin(angle)
    ImageDraw.Draw(canvas).line((centre - dx, centre - dy, centre + dx, centre + dy), fill=1.0, width=4)
    kernel = np.asarray(canvas.resize((size, size), Image.BOX), dtype=np.float32)
    return kernel / kernel.sum()


def _disk_kernel(radius: float) -> np.ndarray:
    size = int(math.ceil(radius))
    y, x = np.mgrid[-size : size + 1, -size : size + 1]
    # Anti-aliased edge: coverage falls from 1 to 0 over one pixel around the radius.
    kernel = np.clip(radius + 0.5 - np.hypot(x, y), 0.0, 1.0).astype(np.float32)
    return kernel / kernel.sum()


def _convolve(image: Image.Image, kernel: np.ndarray) -> Image.Image:
    pixels = _pixels(image)
    return _image(np.stack([ndimage.convolve(pixels[..., c], kernel, mode="reflect") for c in range(3)], axis=-1))


def _gamma(image: Image.Image, gamma: float) -> Image.Image:
    return _image(255.0 * (_pixels(image) / 255.0) ** gamma)


def _noise_shape(image: Image.Image, implementation: str) -> tuple:
    return (image.height, image.width, 1 if implementation == "grey" else 3)


def apply(image: Image.Image, code: str, value: float, rng: np.random.Generator, implementation: str | None = None) -> Image.Image:
    """``image`` (RGB) with distortion ``code`` at parameter ``value`` (units: LEVEL_PARAMETERS),
    made by ``implementation`` (one of ``IMPLEMENTATIONS[code]``; default: the first)."""
    choices = IMPLEMENTATIONS.get(code, (None,))
    implementation = implementation or choices[0]
    if implementation not in choices:
        raise ValueError(f"distortion {code} has no implementation {implementation!r}; available: {', '.join(map(str, choices))}")
    if code == "01":
        if implementation == "gaussian":
            return _image(ndimage.gaussian_filter(_pixels(image), sigma=(value, value, 0)))
        return image.filter(ImageFilter.GaussianBlur(radius=value))
    if code == "02":
        return _convolve(image, _disk_kernel(value))
    if code == "03":
        return _convolve(image, _line_kernel(value, rng.uniform(0, math.pi)))
    if code == "07":
        return ImageEnhance.Color(image).enhance(value)
    if code == "09":
        return _encode(image, format="JPEG2000", quality_mode="rates", quality_layers=[value])
    if code == "10":
        return _encode(image, format="JPEG", quality=max(1, int(round(value))), subsampling=_JPEG_SUBSAMPLING[implementation])
    if code == "11":
        return _image(_pixels(image) + rng.normal(0.0, value, size=_noise_shape(image, implementation)))
    if code == "13":
        pixels = np.asarray(image).copy()
        hit = rng.random((image.height, image.width)) < value
        pixels[hit] = np.where(rng.random((int(hit.sum()), 1)) < 0.5, 0, 255)
        return Image.fromarray(pixels)
    if code == "14":
        pixels = _pixels(image)
        return _image(pixels * (1.0 + rng.normal(0.0, value, size=_noise_shape(image, implementation))))
    if code in ("16", "17"):
        return _gamma(image, value)
    if code == "21":
        small = (max(1, round(image.width / value)), max(1, round(image.height / value)))
        return image.resize(small, _RESAMPLE[implementation]).resize(image.size, Image.NEAREST)
    if code == "22":
        steps = max(2, int(round(value)))
        return _image(np.round(_pixels(image) / 255.0 * (steps - 1)) * (255.0 / (steps - 1)))
    if code == "24":
        return image.filter(ImageFilter.UnsharpMask(radius=1.5, percent=int(round(100 * value)), threshold=0))
    if code == "25":
        return ImageEnhance.Contrast(image).enhance(value)
    raise ValueError(f"no synthetic distortion for KADID code {code!r}; available: {', '.join(CODES)}")


def distort(image: Image.Image, code: str, level: int, rng: np.random.Generator, jitter: float = 0.0,
            vary_implementation: bool = False) -> Image.Image:
    """``image`` with KADID distortion ``code`` at ``level`` (1..5); ``jitter`` draws the
    parameter uniformly within ``level +- jitter`` levels, ``vary_implementation`` the
    implementation among ``IMPLEMENTATIONS[code]`` (drawn after the parameter, so images made
    without it are the same as before it existed)."""
    if code not in LEVEL_PARAMETERS:
        raise ValueError(f"no synthetic distortion for KADID code {code!r}; available: {', '.join(CODES)}")
    if not 1 <= level <= LEVELS:
        raise ValueError(f"level must be 1..{LEVELS}, got {level}")
    position = level + (rng.uniform(-jitter, jitter) if jitter > 0 else 0.0)
    implementation = None
    if vary_implementation and code in IMPLEMENTATIONS:
        implementation = IMPLEMENTATIONS[code][int(rng.integers(len(IMPLEMENTATIONS[code])))]
    return apply(image.convert("RGB"), code, level_parameter(code, position), rng, implementation)


__all__ = ["CODES", "IMPLEMENTATIONS", "LEVELS", "LEVEL_PARAMETERS", "apply", "distort", "level_parameter"]
