"""Image processor of UniQA: decoding, mode conversion, and the test-time views.

PIL + numpy only (no torchvision). Shipped as remote code with every saved model, so it imports
only `torch`, `transformers`, PIL, numpy and its sibling files.
"""

import hashlib
import io
import numbers
import os
import stat

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from .configuration_uniqa import COUNTED_VIEW_POLICIES, parse_view_policy

DEFAULT_MAX_ASPECT_RATIO = 100.0
UPSCALE_IN_ONE_PIECE = 8  # upscaled images up to this many views' pixels are resized whole


def _is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


# How the `random<N>`, `detail<N>` and `pyramid<N>` views are seeded. "shared": by `view_seed` alone, so every
# image of a given size gets the same crop positions (the rule of every folder saved before this
# setting existed, and the closest to the release, which draws one position per crop for a whole
# batch). "per_image": by `view_seed` and a hash of the image's decoded pixels (`image_view_seed`),
# so images of the same size get different positions; still deterministic and independent of the
# batch an image is in.
VIEW_SEEDINGS = ("shared", "per_image")


def image_view_seed(image: Image.Image, view_seed: int) -> int:
    """The seed of one image's views under the "per_image" rule: a 64-bit BLAKE2b hash of
    `view_seed`, the image's size and mode, and its decoded pixels."""
    digest = hashlib.blake2b(f"{int(view_seed)}:{image.width}x{image.height}:{image.mode}:".encode(), digest_size=8)
    digest.update(image.tobytes())
    return int.from_bytes(digest.digest(), "little")


def per_image_views(processor, view_policy: str | None = None) -> bool:
    """Whether `processor` seeds `view_policy`'s views (default its own) per image: the
    "per_image" rule and a policy with random positions (`random<N>`, `detail<N>`, `pyramid<N>`)."""
    kind, _ = parse_view_policy(view_policy or processor.view_policy)
    return getattr(processor, "view_seeding", "shared") == "per_image" and kind in COUNTED_VIEW_POLICIES


def _check_settings(crop_size, shortest_edge, view_seed, image_mean, image_std, max_aspect_ratio, jpeg_draft, view_seeding="shared") -> None:
    """Raise a `ValueError` naming the setting for values of the wrong type or range (read from
    preprocessor_config.json): a string "false" for `jpeg_draft` would be true, a crop of 0 or
    one mean for three channels would score something else, never raising."""
    problems = []
    if not _is_integer(crop_size) or crop_size < 1:
        problems.append(f"`crop_size` must be a positive integer, got {crop_size!r}")
    if shortest_edge is not None and (not _is_integer(shortest_edge) or shortest_edge < 1):
        problems.append(f"`shortest_edge` must be a positive integer or null, got {shortest_edge!r}")
    if not _is_integer(view_seed):
        problems.append(f"`view_seed` must be an integer, got {view_seed!r}")
    for name, values in (("image_mean", image_mean), ("image_std", image_std)):
        if len(values) != 3 or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
            problems.append(f"`{name}` must be 3 numbers (R, G, B), got {values!r}")
    if not problems and not all(v > 0 for v in image_std):
        problems.append(f"`image_std` must be positive, got {image_std!r}")
    if not isinstance(max_aspect_ratio, numbers.Real) or isinstance(max_aspect_ratio, bool) or not max_aspect_ratio >= 1:
        problems.append(f"`max_aspect_ratio` must be >= 1, got {max_aspect_ratio!r}")
    if not isinstance(jpeg_draft, bool):
        problems.append(f"`jpeg_draft` must be true or false, got {jpeg_draft!r}")
    if view_seeding not in VIEW_SEEDINGS:
        problems.append(f"`view_seeding` must be one of {', '.join(VIEW_SEEDINGS)}, got {view_seeding!r}")
    if problems:
        raise ValueError("UniQAImageProcessor: " + "; ".join(problems) + ".")


class UniQAImageError(ValueError):
    """An input could not be turned into an image; the message names the input and the problem."""


def _describe(source, index=None) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    name = getattr(source, "filename", "") if isinstance(source, Image.Image) else ""
    return name or f"image #{index if index is not None else 0} ({type(source).__name__})"


def not_a_regular_file(path) -> str:
    """Why `path` cannot be read as an image file: what it is instead."""
    if not os.path.lexists(path):
        return "no such file."
    link = f" (through the symbolic link to {os.readlink(path)})" if os.path.islink(path) else ""
    if not os.path.exists(path):
        return f"a broken symbolic link to {os.readlink(path)}."
    mode = os.stat(path).st_mode
    kinds = [
        (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
    ]
    kind = next((text for test, text in kinds if test(mode)), "not a regular file")
    return f"{kind}{link}, not an image file: not opened."


def _to_uint8(array: np.ndarray, name: str, integer_max: float | None) -> np.ndarray:
    """Integer pixels in `[0, integer_max]` or float pixels in [0, 1] -> uint8, rounded.
    Values outside that range (or NaN) raise `UniQAImageError`: clipping them would score
    another picture (a float image in 0-255 would come out white)."""
    if integer_max is None:
        if not np.isfinite(array).all():
            raise UniQAImageError(f"{name}: the float pixels hold NaN or infinite values.")
        limit, what = 1.0, "float pixels must lie in [0, 1]"
    else:
        limit, what = integer_max, f"integer pixels must lie in [0, {integer_max:g}] (they are read as 16-bit)"
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > limit:
        raise UniQAImageError(f"{name}: {what}, got [{low:.6g}, {high:.6g}].")
    if integer_max is None:
        return (array * 255.0).round().astype(np.uint8)
    return (array.astype(np.float32) / (integer_max / 255.0)).round().astype(np.uint8)


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
        array = _to_uint8(array, name, 65535)
    elif np.issubdtype(array.dtype, np.floating):
        array = _to_uint8(array, name, None)
    else:
        raise UniQAImageError(f"{name}: unsupported array dtype {array.dtype} (use uint8, uint16 or float in [0, 1]).")
    return Image.fromarray(np.ascontiguousarray(array))


def to_rgb(image: Image.Image, name: str | None = None) -> Image.Image:
    """Any PIL mode -> 8-bit RGB. Transparency (an alpha channel, a palette's or a colour key's)
    is composited on white; 16/32-bit integer greyscale (`I;16*`, `I`) is read as 0-65535 and
    float (`F`) as 0-1, as numpy arrays are: values beyond that raise `UniQAImageError` (named
    `name`) rather than being clipped."""
    if image.mode == "RGB" and "transparency" not in image.info:
        return image
    if image.mode.startswith("I") or image.mode == "F":
        array = np.asarray(image)
        grey = _to_uint8(array, name or _describe(image), None if image.mode == "F" else 65535)
        return Image.fromarray(grey).convert("RGB")
    transparent = image.mode in ("RGBA", "LA", "PA", "La", "RGBa")
    if transparent or (image.mode in ("P", "1", "L", "RGB") and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _draft(image: Image.Image, size: int | None) -> None:
    """Ask PIL's JPEG decoder for a reduced decode (DCT scaling by 1/2, 1/4 or 1/8) that keeps
    both sides >= `size`. A no-op for other formats, for `size=None` and once decoded."""
    if size and isinstance(image, JpegImagePlugin.JpegImageFile):  # MPO (phone JPEGs) too
        # (size, size): the bound holds for both sides, so the EXIF rotation applied later cannot break it.
        image.draft("RGB", (size, size))


def _decode(opened: Image.Image, draft_size: int | None) -> tuple:
    """An image file just opened -> `(its first frame decoded and upright, the file's frame count)`."""
    frames = getattr(opened, "n_frames", 1)  # before decoding: counting may seek
    _draft(opened, draft_size)
    opened.load()  # decode now: truncated files fail here, not later
    return ImageOps.exif_transpose(opened), frames  # an upright copy, independent of the file


def _own_decoder(image: Image.Image) -> Image.Image | None:
    """A decoder of its own on the bytes of a JPEG PIL image not yet decoded (first frame), so
    that drafting it leaves the caller's image whole; `None` when there is none to make."""
    if not isinstance(image, JpegImagePlugin.JpegImageFile) or not image.tile or image.fp is None or image.tell() != 0:
        return None
    position = image.fp.tell()
    image.fp.seek(0)  # `Image.open` read the file from its start
    data = image.fp.read()
    image.fp.seek(position)
    return Image.open(io.BytesIO(data))


def load_image(source, index=None, draft_size: int | None = None, name: str | None = None) -> Image.Image:
    """A path, encoded image bytes, PIL image or numpy array -> an upright 8-bit RGB PIL image.

    The one decoder of every path (the processor, `uniqa score` on files, tar shards and
    `datasets`, the training and evaluation loaders), so an image gives the same pixels
    everywhere. EXIF orientation is applied, and every mode is turned into RGB by `to_rgb`.
    Unreadable, truncated or empty files and bytes, and paths that are no regular file (a
    folder, a FIFO, a device, a broken link: said which, never opened), raise `UniQAImageError`
    naming the image: `name`, else the path, the PIL image's `filename` or `image #<index>`.
    The result's `filename` is that name (so `UniQAImageProcessor.views` names it too). For files
    and bytes, `image.info["n_frames"]` tells how many frames they hold; only the first is used.

    `draft_size`: JPEGs are decoded at a reduced scale whose short side stays >= `draft_size`
    (`Image.draft`): several times faster for large photos, and close to, not equal to, the
    full decode followed by a downscale. A JPEG PIL image not yet decoded is drafted through a
    decoder of its own: the caller's image object is left as it was.
    """
    name = name or _describe(source, index)
    try:
        frames = 1
        if isinstance(source, (str, os.PathLike)):
            if not os.path.isfile(source):
                raise UniQAImageError(f"{name}: {not_a_regular_file(source)}")
            if os.path.getsize(source) == 0:
                raise UniQAImageError(f"{name}: the file is empty (0 bytes).")
            with Image.open(source) as opened:
                image, frames = _decode(opened, draft_size)
        elif isinstance(source, (bytes, bytearray, memoryview)):
            if not len(source):
                raise UniQAImageError(f"{name}: empty (0 bytes).")
            try:
                opened = Image.open(io.BytesIO(source))
            except UnidentifiedImageError as error:  # its text names the BytesIO object, not the image
                raise UniQAImageError(f"{name}: not an image format PIL can read ({len(source)} bytes).") from error
            with opened:
                image, frames = _decode(opened, draft_size)
        elif isinstance(source, Image.Image):
            private = _own_decoder(source) if draft_size else None
            if private is not None:
                with private:
                    image, _ = _decode(private, draft_size)
            else:
                source.load()
                image = ImageOps.exif_transpose(source)
        elif isinstance(source, np.ndarray):
            image = _array_to_pil(source, name)
        else:
            raise UniQAImageError(
                f"{name}: expected a file path, image bytes, PIL image or numpy array, got {type(source).__name__}."
            )
        image = to_rgb(image, name)
        image.info["n_frames"] = frames  # animated or multi-page files are scored on their first frame
    except UniQAImageError:
        raise
    except Exception as error:  # whatever a decoder raises on a bad file (PIL's TIFF reader: TypeError) is this image's error
        raise UniQAImageError(f"{name}: cannot read image ({type(error).__name__}: {error}).") from error
    if image.width < 1 or image.height < 1:
        raise UniQAImageError(f"{name}: the image has no pixels ({image.width}x{image.height}).")
    image.filename = name
    return image


def short_side_size(width: int, height: int, target: int) -> tuple:
    """`(width, height)` of an image of size `width` x `height` resized so its short side is
    `target`, aspect ratio kept (rounded; neither side below `target`). The processor's
    `shortest_edge` resize and its upscaling of images smaller than the crop use it, and so do
    the training transforms (`train_scripts/common/transforms.py`)."""
    scale = target / min(width, height)
    return max(target, round(width * scale)), max(target, round(height * scale))


# PIL's bicubic resampling (Pillow's Resample.c), replayed for a window of the output: the same
# double-precision coefficients, rounded to the same fixed point, summed in the same order, so a
# view cut from a virtually upscaled image is bit-identical to a crop of `image.resize(...)`.
_PRECISION_BITS = 32 - 8 - 2
_BICUBIC_SUPPORT = 2.0
_BICUBIC_A = -0.5


def _bicubic(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    near = ((_BICUBIC_A + 2.0) * x - (_BICUBIC_A + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * _BICUBIC_A
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def _upscale_coefficients(in_size: int, out_size: int, first: int, count: int):
    """Source index `(count, taps)` and fixed-point weights of the output pixels
    `first .. first + count - 1` of PIL's bicubic resize of `in_size` pixels to `out_size >= in_size`."""
    scale = float(in_size) / out_size  # <= 1: upscaling, so PIL's filterscale is 1
    support = _BICUBIC_SUPPORT
    taps = int(np.ceil(support)) * 2 + 1
    center = (np.arange(first, first + count) + 0.5) * scale
    lowest = np.maximum((center - support + 0.5).astype(np.int64), 0)  # truncated toward zero like C's (int), then clamped
    highest = np.minimum((center + support + 0.5).astype(np.int64), in_size)
    offsets = np.arange(taps)
    used = offsets[None, :] < (highest - lowest)[:, None]
    # PIL scales the filter's argument by 1 / filterscale, which is 1 when upscaling.
    weights = np.where(used, _bicubic(lowest[:, None] + offsets[None, :] - center[:, None] + 0.5), 0.0)
    total = np.zeros(count)
    for tap in range(taps):  # left to right, as C sums them
        total = total + weights[:, tap]
    weights = weights / np.where(total != 0.0, total, 1.0)[:, None]
    scaled = weights * (1 << _PRECISION_BITS)
    fixed = np.where(weights < 0, np.trunc(-0.5 + scaled), np.trunc(0.5 + scaled)).astype(np.int64)
    index = np.minimum(lowest[:, None] + offsets[None, :], in_size - 1)  # unused taps weigh 0
    return index, fixed


def _apply(pixels: np.ndarray, index: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    """One resampling pass along `axis` (0 rows, 1 columns) in PIL's 8-bit fixed point.

    Done as one float64 matrix product: every product and partial sum is an integer below 2**53,
    so the sums are exact and equal PIL's integer ones."""
    first = int(index.min())
    dense = np.zeros((index.shape[0], int(index.max()) + 1 - first))
    np.add.at(dense, (np.arange(index.shape[0])[:, None], index - first), weights.astype(np.float64))
    source = np.take(pixels, np.arange(first, first + dense.shape[1]), axis=axis).astype(np.float64)
    total = np.tensordot(dense, np.moveaxis(source, axis, 0), axes=(1, 0)) + (1 << (_PRECISION_BITS - 1))
    result = np.clip(np.floor(total / (1 << _PRECISION_BITS)), 0, 255).astype(np.uint8)
    return np.moveaxis(result, 0, axis)


def upscaled_region(pixels: np.ndarray, size: tuple, left: int, top: int, crop: int) -> np.ndarray:
    """The `crop` x `crop` window at `(left, top)` of `Image.fromarray(pixels).resize(size,
    BICUBIC)` for an upscaling `size`, computed from the source rows and columns it needs only."""
    height, width = pixels.shape[:2]
    out_width, out_height = size
    rows, row_weights = _upscale_coefficients(height, out_height, top, crop)
    columns, column_weights = _upscale_coefficients(width, out_width, left, crop)
    if out_width != width:  # PIL skips a pass whose size does not change
        first, last = rows.min(), rows.max() + 1
        pixels = _apply(pixels[first:last], columns, column_weights, axis=1)
        rows = rows - first
    else:
        pixels = pixels[:, left : left + crop]
    if out_height != height:
        return _apply(pixels, rows, row_weights, axis=0)
    return pixels[top : top + crop]


def crop_boxes(width: int, height: int, crop: int, policy: str, seed: int | tuple) -> list:
    """`(left, top, flip)` of each view of a `width` x `height` image for a view policy.

    Needs `width, height >= crop`. `random<N>` draws N positions from a generator seeded with
    `seed` for this image alone, so a score never depends on the other images of a batch.
    """
    kind, count = parse_view_policy(policy)
    if kind in ("detail", "pyramid"):
        raise ValueError(f"{policy!r} cuts views of pixels it derives: use `{kind}_views`, not `crop_boxes`.")
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


def cut_views(image: Image.Image, size: tuple, crop: int, boxes) -> np.ndarray:
    """The `crop` x `crop` windows `(left, top, flip)` of `image` resized (bicubic) to `size` (its
    own size, or an upscale of it), mirrored where `flip`: uint8 `(len(boxes), crop, crop, 3)`.

    Beyond `UPSCALE_IN_ONE_PIECE` windows' worth of pixels the upscale is not made: only the
    windows' pixels are computed (`upscaled_region`, bit-identical), so memory stays bounded
    whatever the image's shape (a 1x10000 strip would upscale to 1.5 GB). Used by the test-time
    views and by the training crops."""
    windowed = size != image.size and size[0] * size[1] > UPSCALE_IN_ONE_PIECE * crop * crop
    if size != image.size and not windowed:
        image = image.resize(size, Image.BICUBIC)  # small enough to upscale whole (faster)
    pixels = np.asarray(image)  # (H, W, 3)
    views = []
    for left, top, flip in boxes:
        if windowed:
            view = upscaled_region(pixels, size, left, top, crop)
        else:
            view = pixels[top : top + crop, left : left + crop]
        views.append(view[:, ::-1] if flip else view)
    return np.stack(views)


def view_detail(views: np.ndarray) -> np.ndarray:
    """How much detail each uint8 view `(views, crop, crop, 3)` holds: the mean absolute difference
    of neighbouring pixels (across and down) of its channel mean. Blur, noise and compression show
    most where a picture has detail; a window of clear sky shows none of them."""
    grey = views.astype(np.float32).mean(axis=-1)  # (views, crop, crop)
    return np.abs(np.diff(grey, axis=1)).mean(axis=(1, 2)) + np.abs(np.diff(grey, axis=2)).mean(axis=(1, 2))


def detail_views(image: Image.Image, size: tuple, crop: int, count: int, seed: int) -> np.ndarray:
    """The `detail<count>` views: of `2 * count` random windows (`crop_boxes(..., "random<2 count>",
    seed)`), the `ceil(count / 2)` with the most detail (`view_detail`), then the first
    `floor(count / 2)` of the others in the order drawn, so the flat parts of a picture still count.
    uint8 `(count, crop, crop, 3)`."""
    candidates = cut_views(image, size, crop, crop_boxes(*size, crop, f"random{2 * count}", seed))
    detailed = np.argsort(-view_detail(candidates), kind="stable")[: (count + 1) // 2]
    others = np.setdiff1d(np.arange(len(candidates)), detailed)[: count // 2]  # sorted: the order drawn
    return candidates[np.concatenate([detailed, others])]


def pyramid_views(image: Image.Image, size: tuple, crop: int, count: int, seed: int) -> np.ndarray:
    """The `pyramid<count>` views: `ceil(count / 2)` random windows of `image` at `size`
    (`crop_boxes(..., "random<n>", seed)`), then `floor(count / 2)` random windows of it halved by a
    2x2 average (`Image.reduce(2)`; positions from the generator of `(seed, 1)`). A heavily
    blurred picture is flat in every window at its own scale, whatever the blur's strength; at half
    the scale the blur is half as wide and its strength still shows. Where the halved image is
    narrower than `crop` (or the image is upscaled to `size`) all views are cut at `size`.
    uint8 `(count, crop, crop, 3)`."""
    native, halved = (count + 1) // 2, count // 2
    small = image.reduce(2) if size == image.size and min(image.size) >= 2 * crop else None
    if small is None or halved == 0:
        return cut_views(image, size, crop, crop_boxes(*size, crop, f"random{count}", seed))
    views = cut_views(image, size, crop, crop_boxes(*size, crop, f"random{native}", seed))
    small_boxes = crop_boxes(*small.size, crop, f"random{halved}", (seed, 1))  # a generator of its own
    return np.concatenate([views, cut_views(small, small.size, crop, small_boxes)])


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
        view_seed (`int`, *optional*, defaults to 123): seed of the `random<N>`, `detail<N>` and `pyramid<N>` crop positions.
        view_seeding (`str`, *optional*, defaults to `"shared"`): `"shared"` seeds every image's
            views with `view_seed` alone (images of one size get the same positions; the rule of
            folders saved before this setting, which keep it), `"per_image"` with `view_seed` and a
            hash of the image's pixels (`image_view_seed`; what `UniQAModel.default_image_processor`
            gives new folders).
        image_mean, image_std (`list[float]`, *optional*): normalisation (OpenAI CLIP's).
        max_aspect_ratio (`float`, *optional*, defaults to 100): images whose long side exceeds this
            many times the short side raise `UniQAImageError` (a 1x10000 strip has no meaningful views).
        jpeg_draft (`bool`, *optional*, defaults to `False`): decode JPEGs at a reduced scale (PIL's
            draft mode: DCT scaling by 1/2, 1/4 or 1/8) where the views downsize the image anyway,
            i.e. for the `resize` policy and when `shortest_edge` is set, keeping the short side >=
            the size the next resize goes to (`draft_size`). Several times faster to decode large
            photos, but the pixels are not those of the full decode: scores move slightly (see the
            README's Performance section). Other policies crop the native resolution and ignore it.
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
        max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO,
        jpeg_draft: bool = False,
        view_seeding: str = "shared",
        **kwargs,
    ):
        super().__init__(**kwargs)
        image_mean = list(image_mean if image_mean is not None else OPENAI_CLIP_MEAN)
        image_std = list(image_std if image_std is not None else OPENAI_CLIP_STD)
        _check_settings(crop_size, shortest_edge, view_seed, image_mean, image_std, max_aspect_ratio, jpeg_draft, view_seeding)
        self.max_aspect_ratio = float(max_aspect_ratio)
        parse_view_policy(view_policy)
        self.crop_size = int(crop_size)
        self.shortest_edge = None if shortest_edge is None else int(shortest_edge)
        self.view_policy = view_policy
        self.view_seed = int(view_seed)
        self.image_mean = image_mean
        self.image_std = image_std
        self.jpeg_draft = jpeg_draft
        self.view_seeding = view_seeding

    def draft_size(self, view_policy: str | None = None) -> int | None:
        """The short side a JPEG may be draft-decoded down to for `view_policy` (default the
        processor's), or `None` for a full decode: without `jpeg_draft`, or when the views crop
        the native resolution (the image is never downsized, so a draft would change the views)."""
        if not self.jpeg_draft:
            return None
        policy = view_policy or self.view_policy
        if policy == "resize":  # squeezed to crop x crop: both sides must stay >= crop (and >= shortest_edge)
            return max(self.crop_size, self.shortest_edge or 0)
        return self.shortest_edge or None

    def _resize_short_side(self, image: Image.Image, target: int) -> Image.Image:
        return image.resize(short_side_size(image.width, image.height, target), Image.BICUBIC)

    def check_shape(self, size: tuple[int, int], name: str) -> None:
        """Raise `UniQAImageError` naming `name` when an image of `size` (width, height) is too
        elongated for this processor's views (`max_aspect_ratio`); needs the size only, no pixels."""
        long_side, short_side = max(size), min(size)
        if long_side > self.max_aspect_ratio * short_side:
            raise UniQAImageError(
                f"{name}: {size[0]}x{size[1]} pixels, an aspect ratio of {long_side / short_side:.0f}:1, beyond the "
                f"{self.max_aspect_ratio:g}:1 this processor accepts (`max_aspect_ratio`): its views would be slivers of it."
            )

    def views(self, image: Image.Image, view_policy: str | None = None, view_seed: int | None = None, name: str | None = None) -> np.ndarray:
        """An RGB PIL image -> uint8 views (views, crop, crop, 3).

        An image whose short side is below `crop_size` is cut from its bicubic upscale (aspect
        kept) to that short side. Beyond `UPSCALE_IN_ONE_PIECE` views' worth of pixels the upscale
        is not made: only the pixels of the views are computed, bit-identical to PIL's resize of
        the whole image, so memory stays bounded whatever the shape. Images beyond `max_aspect_ratio` raise `UniQAImageError`
        naming them: `name`, else the image's `filename` (set by `load_image`).
        """
        policy = view_policy or self.view_policy
        crop = self.crop_size
        self.check_shape(image.size, name or _describe(image))
        seed = self.view_seed if view_seed is None else view_seed
        kind, count = parse_view_policy(policy)
        if per_image_views(self, policy):
            seed = image_view_seed(image, seed)  # of the decoded pixels, before any resize
        if self.shortest_edge:
            image = self._resize_short_side(image, self.shortest_edge)
        if policy == "resize":
            return np.array(image.resize((crop, crop), Image.BICUBIC))[None]  # writable, as torch.from_numpy wants
        size = short_side_size(image.width, image.height, crop) if min(image.size) < crop else image.size
        if kind == "detail":
            return detail_views(image, size, crop, count, seed)
        if kind == "pyramid":
            return pyramid_views(image, size, crop, count, seed)
        return cut_views(image, size, crop, crop_boxes(*size, crop, policy, seed))

    def normalize_views(self, views: np.ndarray) -> np.ndarray:
        """uint8 (..., crop, crop, 3) -> float32 (..., 3, crop, crop), CLIP-normalised."""
        mean = np.asarray(self.image_mean, dtype=np.float32) * 255.0
        inv_std = 1.0 / (np.asarray(self.image_std, dtype=np.float32) * 255.0)
        pixels = (views.astype(np.float32) - mean) * inv_std
        return np.ascontiguousarray(np.moveaxis(pixels, -1, -3))

    def preprocess(self, images, view_policy: str | None = None, view_seed: int | None = None, return_tensors="pt", **kwargs) -> BatchFeature:
        """One image or a list (paths, PIL images, numpy arrays) -> `pixel_values`
        `(batch, views, 3, crop, crop)`. Bad inputs raise `UniQAImageError` naming them; an
        unknown keyword (a typo such as `view_polcy=`) raises `TypeError`."""
        if kwargs:
            accepted = "images, view_policy, view_seed, return_tensors"
            raise TypeError(f"UniQAImageProcessor got unexpected arguments {sorted(kwargs)}; it accepts {accepted}.")
        if view_policy is not None:
            parse_view_policy(view_policy)
        if not isinstance(images, (list, tuple)):
            images = [images]
        batch = np.stack(
            [
                self.views(load_image(image, index, self.draft_size(view_policy)), view_policy, view_seed, name=_describe(image, index))
                for index, image in enumerate(images)
            ]
        )
        return BatchFeature(data={"pixel_values": self.normalize_views(batch)}, tensor_type=return_tensors)

    def __call__(self, images, **kwargs) -> BatchFeature:
        return self.preprocess(images, **kwargs)


UniQAImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = [
    "UniQAImageProcessor", "UniQAImageError", "load_image", "to_rgb", "crop_boxes", "cut_views", "detail_views", "pyramid_views", "upscaled_region",
    "view_detail", "image_view_seed", "per_image_views", "short_side_size", "not_a_regular_file", "VIEW_SEEDINGS",
]
