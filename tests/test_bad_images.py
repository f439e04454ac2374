"""Odd and broken images through every decoding entry point: the processor, `uniqa score`'s
`decode_views` (files, tar-shard and `datasets` bytes), the training/evaluation loaders and
`explain`. Each gives the same pixels as the others, or an error naming the image."""

import io
import struct

import numpy as np
import pytest
from PIL import Image

from modeling_uniqa import UniQAImageError, UniQAImageProcessor
from modeling_uniqa.scoring.score_images import decode_views
from tests.helpers import TINY_IMAGE_SIZE, random_rgb
from train_scripts.common.image_views import EvalViews, ImageViewDataset
from train_scripts.common.pretrain_data import decode_image_cell

GREY = random_rgb(24, 40, seed=3)[..., 0]  # an 8-bit picture; the deep modes below hold it scaled


def encode(image: Image.Image, format: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **kwargs)
    return buffer.getvalue()


def tiff_with_a_bad_next_frame() -> bytes:
    """A whole 8x8 TIFF whose pointer to a second frame is garbage: PIL raises TypeError counting frames."""
    data = bytearray(encode(Image.new("RGB", (8, 8), (1, 2, 3)), "TIFF"))
    first_ifd = struct.unpack("<I", data[4:8])[0]
    entries = struct.unpack("<H", data[first_ifd : first_ifd + 2])[0]
    data[first_ifd + 2 + 12 * entries] = 1  # the next-IFD offset
    return bytes(data)


def bomb_png(side: int = 30000) -> bytes:
    """A PNG header announcing side x side pixels (beyond PIL's decompression-bomb limit) and no data."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def decoders(processor, name, with_pil=True):
    """Every entry point that turns a file into model inputs, as `(label, (path, bytes) -> normalised
    views)`. `with_pil`: include a PIL image opened by the caller (as the pipeline takes them)."""
    views = EvalViews(processor, "center", 0)

    def normalised(views_):
        return processor.normalize_views(views_)

    def scored(result):  # `uniqa score`'s decoder gives error messages, not exceptions
        views_, error, _ = result
        if error is not None:
            raise UniQAImageError(error)
        return normalised(views_.numpy())

    entries = [
        ("processor(path)", lambda path, data: processor(path, view_policy="center", view_seed=0, return_tensors="np")["pixel_values"][0]),
        ("uniqa score (file)", lambda path, data: scored(decode_views(path, processor, "center", 0, path))),
        ("shards / --dataset (bytes)", lambda path, data: scored(decode_views(data, processor, "center", 0, name))),
        ("evaluate (path)", lambda path, data: ImageViewDataset([path], processor, views)[0][1].numpy()),
        ("evaluate (embedded bytes)", lambda path, data: ImageViewDataset([(name, data)], processor, views)[0][1].numpy()),
        ("pre-training cell", lambda path, data: normalised(views(decode_image_cell({"bytes": data, "path": None}, name), 0, 0))),
    ]
    if with_pil:
        entries.append(("pipeline (PIL image)", lambda path, data: processor(Image.open(path), view_policy="center", view_seed=0, return_tensors="np")["pixel_values"][0]))
    return entries


def exif_rotated(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(Image.fromarray(GREY), "PNG", exif=exif)


def palette_with_alpha() -> bytes:
    """A 2-colour palette image whose second colour is half transparent (a PNG tRNS chunk)."""
    image = Image.fromarray((GREY > 128).astype(np.uint8), mode="P")
    image.putpalette([0, 0, 0, 100, 100, 100])
    return encode(image, "PNG", transparency=bytes([255, 128]))


ODD_IMAGES = {  # name: (bytes, the 8-bit RGB picture it shows)
    "exif6.png": (exif_rotated(6), np.rot90(GREY, k=-1)),  # "rotate 90 degrees clockwise to view"
    "exif3.png": (exif_rotated(3), np.rot90(GREY, k=2)),
    "palette_alpha.png": (palette_with_alpha(), np.where(GREY > 128, 177, 0)),  # 100 over white at alpha 128/255: 177.2
    "i16.tif": (encode(Image.fromarray(GREY.astype(np.uint16) * 257), "TIFF"), GREY),
    "i16b.tif": (encode(Image.frombytes("I;16B", GREY.shape[::-1], (GREY.astype(">u2") * 257).tobytes()), "TIFF"), GREY),
    "i32.tif": (encode(Image.fromarray(GREY.astype(np.int32) * 257), "TIFF"), GREY),
    "float.tif": (encode(Image.fromarray(GREY.astype(np.float32) / 255), "TIFF"), GREY),
    # a colour key (the middle pixel's grey): transparent, so composited on white
    "key.png": (encode(Image.fromarray(np.dstack([GREY] * 3)), "PNG", transparency=(int(GREY[12, 20]),) * 3),
                np.where(GREY[12, 20] == GREY, 255, GREY)),
}


@pytest.mark.parametrize("name", sorted(ODD_IMAGES))
def test_deep_and_keyed_images_give_the_same_right_pixels_everywhere(tmp_path, name):
    data, expected = ODD_IMAGES[name]
    path = tmp_path / name
    path.write_bytes(data)
    processor = UniQAImageProcessor(crop_size=16)
    reference = processor.normalize_views(processor.views(Image.fromarray(np.dstack([expected] * 3).astype(np.uint8)), "center", 0))
    for label, decode in decoders(processor, name):
        np.testing.assert_array_equal(decode(str(path), data), reference, err_msg=label)


BAD_IMAGES = {  # name: (bytes, what the error says)
    "float255.tif": (encode(Image.fromarray(GREY.astype(np.float32)), "TIFF"), r"float pixels must lie in \[0, 1\], got \[\d+, 2\d\d\]"),
    "nan.tif": (encode(Image.fromarray(np.full((8, 8), np.nan, np.float32)), "TIFF"), "NaN"),
    "i32big.tif": (encode(Image.fromarray(GREY.astype(np.int32) * 65536), "TIFF"), r"integer pixels must lie in \[0, 65535\]"),
    "negative.tif": (encode(Image.fromarray(GREY.astype(np.int32) - 100), "TIFF"), r"integer pixels must lie in \[0, 65535\]"),
    "bad_frames.tif": (tiff_with_a_bad_next_frame(), r"cannot read image \(TypeError"),
    "bomb.png": (bomb_png(), "DecompressionBombError: Image size"),
    "empty.jpg": (b"", "empty"),
    "text.jpg": (b"hello, I am text\n", "cannot read image|not an image format PIL can read"),
    "strip.png": (encode(Image.new("RGB", (2, 300)), "PNG"), "2x300 pixels, an aspect ratio of 150:1"),
}


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_bad_images_are_refused_by_every_path_naming_them(tmp_path, name):
    """Never clipped to white or passed as a stray exception: an error naming the image."""
    data, reason = BAD_IMAGES[name]
    path = tmp_path / name
    path.write_bytes(data)
    for label, decode in decoders(UniQAImageProcessor(crop_size=16), name, with_pil=False):
        with pytest.raises(UniQAImageError, match=rf"^\S*{name}: .*({reason})") as caught:
            decode(str(path), data)
        assert "BytesIO" not in str(caught.value), label


def test_explain_names_a_bad_image(tiny_model_factory, tmp_path):
    """`uniqa explain` warns about the image and goes on to the next (a stray TypeError stopped it)."""
    from modeling_uniqa.analysis.explain import explain_image, score_target

    model, processor = tiny_model_factory(), UniQAImageProcessor(crop_size=TINY_IMAGE_SIZE)
    for name in ("bad_frames.tif", "strip.png"):
        path = tmp_path / name
        path.write_bytes(BAD_IMAGES[name][0])
        with pytest.raises(UniQAImageError, match=f"^{path}: "):
            explain_image(model, processor, str(path), [score_target(model)])


def test_drafting_a_pil_image_leaves_the_callers_image_whole(tmp_path):
    """A JPEG PIL image drafted for the `resize` views must stay full size for the caller (and
    for the next call: center crops of a drafted image are other pixels)."""
    path = tmp_path / "photo.jpg"
    Image.fromarray(random_rgb(192, 256, seed=1)).save(path, quality=90)
    drafting = UniQAImageProcessor(crop_size=TINY_IMAGE_SIZE, jpeg_draft=True)
    image = Image.open(path)
    resized = drafting(image, view_policy="resize", return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(resized, drafting(str(path), view_policy="resize", return_tensors="np")["pixel_values"])
    assert image.size == (256, 192)
    centre = drafting(image, view_policy="center", return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(centre, drafting(str(path), view_policy="center", return_tensors="np")["pixel_values"])


@pytest.mark.parametrize("size", [(1, 5000), (5000, 1)])
def test_training_crops_of_a_thin_strip_stay_small(size):
    """Fine-tuning crops, the feature bank and the pre-training transform cut a thin strip's
    upscale window by window, as the test-time views do (its whole upscale: 61 MB at crop 64)."""
    import tracemalloc

    from train_scripts.common.transforms import PretrainTransform, finetune_crop_flip, finetune_view_bank

    crop, image = 64, Image.new("RGB", size, (200, 100, 50))
    tracemalloc.start()
    try:
        crops = [finetune_crop_flip(image, crop, np.random.default_rng(0))[None], finetune_view_bank(image, crop, np.random.default_rng(0), 2)]
        pretrain = PretrainTransform(crop)(image)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert all((views == [200, 100, 50]).all() and views.shape[1:] == (crop, crop, 3) for views in crops)
    np.testing.assert_allclose(pretrain, PretrainTransform(crop)(Image.new("RGB", (crop, crop), (200, 100, 50))), atol=1e-6)
    assert peak < 40 * crop * crop * 4  # a few float32 views, not the 61 MB upscale
