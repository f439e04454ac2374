"""UniQAImageProcessor: views, determinism, and every odd or broken input."""

import io

import numpy as np
import pytest
from PIL import Image

from modeling_uniqa import UniQAImageError, UniQAImageProcessor, load_image
from modeling_uniqa.configuration_uniqa import parse_view_policy, view_count
from modeling_uniqa.processing_uniqa import crop_boxes, pyramid_views, view_detail
from tests.helpers import random_rgb

CROP = 32


@pytest.fixture
def processor():
    return UniQAImageProcessor(crop_size=CROP, view_policy="random10")


def unnormalize(processor, pixel_values):
    """float (..., 3, c, c) -> uint8-valued float (..., c, c, 3)."""
    mean = np.asarray(processor.image_mean) * 255
    std = np.asarray(processor.image_std) * 255
    return np.moveaxis(pixel_values, -3, -1) * std + mean


@pytest.mark.parametrize(
    "policy, views",
    [("random10", 10), ("random3", 3), ("detail10", 10), ("detail3", 3), ("pyramid10", 10), ("pyramid3", 3), ("pyramid1", 1), ("center", 1), ("five_crop", 5), ("ten_crop", 10), ("resize", 1)],
)
def test_view_policies_shapes(processor, policy, views):
    image = Image.fromarray(random_rgb(48, 70))
    pixel_values = processor(image, view_policy=policy)["pixel_values"]
    assert tuple(pixel_values.shape) == (1, views, 3, CROP, CROP)


def test_views_are_the_right_pixels(processor):
    array = random_rgb(48, 70, seed=3)
    image = Image.fromarray(array)
    five = unnormalize(processor, processor(image, view_policy="ten_crop", return_tensors="np")["pixel_values"][0])
    corners = [array[:CROP, :CROP], array[:CROP, -CROP:], array[-CROP:, :CROP], array[-CROP:, -CROP:]]
    for view, expected in zip(five[:4], corners):
        np.testing.assert_allclose(view, expected, atol=1e-3)
    top, left = (48 - CROP) // 2, (70 - CROP) // 2
    np.testing.assert_allclose(five[4], array[top : top + CROP, left : left + CROP], atol=1e-3)
    np.testing.assert_allclose(five[5:], five[:5, :, ::-1], atol=1e-3)  # mirrored copies
    resized = unnormalize(processor, processor(image, view_policy="resize", return_tensors="np")["pixel_values"][0, 0])
    np.testing.assert_allclose(resized, np.asarray(image.resize((CROP, CROP), Image.BICUBIC)), atol=1e-3)


def test_random_views_deterministic_and_seeded():
    boxes = crop_boxes(100, 80, 32, "random10", seed=123)
    assert boxes == crop_boxes(100, 80, 32, "random10", seed=123)
    assert boxes != crop_boxes(100, 80, 32, "random10", seed=124)
    assert len(set(boxes)) > 1
    assert all(0 <= left <= 68 and 0 <= top <= 48 for left, top, _ in boxes)


def test_detail_views_take_half_for_detail_and_half_at_random(processor):
    # Left half flat grey, right half texture: `detail<N>` cuts 2N seeded windows, keeps the N/2 with
    # the most detail and the first N/2 of the others in the order drawn.
    pixels = np.full((64, 400, 3), 100, dtype=np.uint8)
    pixels[:, 200:] = random_rgb(64, 200, seed=2)
    image = Image.fromarray(pixels)
    views = unnormalize(processor, processor(image, view_policy="detail10", return_tensors="np")["pixel_values"][0])
    candidates = crop_boxes(400, 64, CROP, "random20", seed=processor.view_seed)
    windows = np.stack([pixels[top : top + CROP, left : left + CROP] for left, top, _ in candidates])
    order = np.argsort(-view_detail(windows), kind="stable")
    expected = np.concatenate([order[:5], np.sort(order[5:])[:5]])
    np.testing.assert_allclose(views, windows[expected], atol=1e-3)
    assert all(left + CROP > 200 for left, _, _ in [candidates[i] for i in order[:5]])  # the detailed ones see texture
    again = processor(image, view_policy="detail10", return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(again[0], processor(image, view_policy="detail10", return_tensors="np")["pixel_values"][0])
    assert parse_view_policy("detail20") == ("detail", 20) and view_count("detail7") == 7
    for bad in ("detail0", "detail", "details10"):
        with pytest.raises(ValueError, match="detail<N>"):
            parse_view_policy(bad)
    with pytest.raises(ValueError, match="detail_views"):
        crop_boxes(100, 80, 32, "detail10", seed=1)


def test_pyramid_views_cut_half_at_full_size_and_half_of_the_image_halved(processor):
    pixels = random_rgb(80, 130, seed=3)
    image = Image.fromarray(pixels)
    views = unnormalize(processor, processor(image, view_policy="pyramid5", return_tensors="np")["pixel_values"][0])
    native = crop_boxes(130, 80, CROP, "random3", seed=processor.view_seed)
    np.testing.assert_allclose(views[:3], [pixels[top : top + CROP, left : left + CROP] for left, top, _ in native], atol=1e-3)
    halved = pixels.reshape(40, 2, 65, 2, 3).astype(np.float64).mean(axis=(1, 3))  # a 2x2 average
    rng = np.random.default_rng((processor.view_seed, 1))
    lefts, tops = rng.integers(0, 65 - CROP + 1, size=2), rng.integers(0, 40 - CROP + 1, size=2)
    expected = [halved[top : top + CROP, left : left + CROP] for left, top in zip(lefts, tops)]
    np.testing.assert_allclose(views[3:], expected, atol=0.51)  # PIL rounds the average
    assert np.abs(views[3:] - expected).max() > 0.2  # not a plain crop
    assert parse_view_policy("pyramid10") == ("pyramid", 10) and view_count("pyramid7") == 7
    with pytest.raises(ValueError, match="pyramid<N>"):
        parse_view_policy("pyramid0")
    with pytest.raises(ValueError, match="pyramid_views"):
        crop_boxes(100, 80, 32, "pyramid10", seed=1)


@pytest.mark.parametrize("height", [63, 20])
def test_pyramid_views_of_an_image_too_small_to_halve_are_all_at_full_size(processor, height):
    # Under 2 x the crop on its short side (or upscaled to the crop), nothing is halved: all
    # `pyramid<N>` views are the `random<N>` ones.
    image = Image.fromarray(random_rgb(height, 90, seed=4))
    pyramid = processor(image, view_policy="pyramid6", return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(pyramid, processor(image, view_policy="random6", return_tensors="np")["pixel_values"])
    size = image.size if height >= CROP else (round(90 * CROP / height), CROP)
    assert pyramid_views(image, size, CROP, 6, 0).shape == (6, CROP, CROP, 3)


def test_views_do_not_depend_on_batch(processor):
    images = [Image.fromarray(random_rgb(40 + 7 * i, 60, seed=i)) for i in range(3)]
    together = processor(images)["pixel_values"]
    for index, image in enumerate(images):
        alone = processor(image)["pixel_values"][0]
        assert (together[index] == alone).all()


def test_small_images_are_upscaled_keeping_aspect(processor):
    image = Image.fromarray(random_rgb(8, 16))
    pixel_values = processor(image, view_policy="center", return_tensors="np")["pixel_values"]
    assert pixel_values.shape == (1, 1, 3, CROP, CROP)
    upscaled = np.asarray(image.resize((64, 32), Image.BICUBIC))
    np.testing.assert_allclose(unnormalize(processor, pixel_values[0, 0]), upscaled[:, 16:48], atol=1e-3)


def test_shortest_edge_resize():
    processor = UniQAImageProcessor(crop_size=CROP, shortest_edge=40, view_policy="center")
    image = Image.fromarray(random_rgb(80, 120))
    got = unnormalize(processor, processor(image, return_tensors="np")["pixel_values"][0, 0])
    expected = np.asarray(image.resize((60, 40), Image.BICUBIC))[4:36, 14:46]
    np.testing.assert_allclose(got, expected, atol=1e-3)


def test_processor_save_load(tmp_path):
    processor = UniQAImageProcessor(crop_size=48, view_policy="five_crop", view_seed=7, shortest_edge=64)
    processor.save_pretrained(tmp_path)
    loaded = UniQAImageProcessor.from_pretrained(tmp_path)
    assert (loaded.crop_size, loaded.view_policy, loaded.view_seed, loaded.shortest_edge) == (48, "five_crop", 7, 64)


def test_unknown_view_policy():
    with pytest.raises(ValueError, match="view policy"):
        UniQAImageProcessor(view_policy="eleven_crop")


# ------------------------------------------------------------------------------------------------
# Bad and odd inputs: a clear error naming the input, or the same pixels as the plain RGB image.
# ------------------------------------------------------------------------------------------------
def center_pixels(processor, source):
    return processor(source, view_policy="center", return_tensors="np")["pixel_values"]


def test_corrupt_file_is_named(processor, tmp_path):
    path = tmp_path / "corrupt.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg" * 10)
    with pytest.raises(UniQAImageError, match="corrupt.jpg"):
        processor(str(path))


def test_truncated_file_is_named(processor, tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(random_rgb(64, 64)).save(buffer, format="JPEG")
    path = tmp_path / "truncated.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(UniQAImageError, match="truncated.jpg"):
        processor(str(path))


def test_empty_and_missing_files_are_named(processor, tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(UniQAImageError, match="empty.png.*empty"):
        processor(str(empty))
    with pytest.raises(UniQAImageError, match="nope.png.*no such file"):
        processor(str(tmp_path / "nope.png"))


def test_not_an_image_is_named(processor, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(UniQAImageError, match="notes.txt"):
        processor(str(path))


def test_bad_arrays_and_types(processor):
    with pytest.raises(UniQAImageError, match="image #0.*shape"):
        processor(np.zeros((8, 8, 5), dtype=np.uint8))
    with pytest.raises(UniQAImageError, match=r"\[0, 1\]"):
        processor(np.full((8, 8, 3), 3.0, dtype=np.float32))
    with pytest.raises(UniQAImageError, match="NaN"):
        processor(np.full((8, 8, 3), np.nan, dtype=np.float32))
    with pytest.raises(UniQAImageError, match="image #1.*int"):
        processor([np.zeros((8, 8, 3), np.uint8), 42])


def test_cmyk_matches_its_rgb_conversion(processor, tmp_path):
    cmyk = Image.fromarray(random_rgb(40, 40)).convert("CMYK")
    path = tmp_path / "cmyk.jpg"
    cmyk.save(path, quality=100)
    with Image.open(path) as reopened:
        assert reopened.mode == "CMYK"
        expected = center_pixels(processor, reopened.convert("RGB"))
    np.testing.assert_allclose(center_pixels(processor, str(path)), expected, atol=1e-5)


def test_rgba_is_composited_on_white(processor, tmp_path):
    rgb = random_rgb(40, 40)
    alpha = np.full((40, 40), 255, np.uint8)
    alpha[:, :20] = 0  # left half fully transparent
    path = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([rgb, alpha])).save(path)
    expected = rgb.copy()
    expected[:, :20] = 255
    np.testing.assert_allclose(center_pixels(processor, str(path)), center_pixels(processor, expected), atol=1e-5)


def test_16_bit_png_is_scaled(processor, tmp_path):
    grey8 = random_rgb(40, 40)[..., 0]
    path = tmp_path / "deep.png"
    Image.fromarray(grey8.astype(np.uint16) * 257).save(path)
    with Image.open(path) as reopened:
        assert reopened.mode.startswith("I")
    expected = center_pixels(processor, np.repeat(grey8[..., None], 3, axis=-1))
    np.testing.assert_allclose(center_pixels(processor, str(path)), expected, atol=1e-5)
    # numpy uint16 input gives the same
    np.testing.assert_allclose(center_pixels(processor, grey8.astype(np.uint16) * 257), expected, atol=1e-5)


def test_palette_image(processor, tmp_path):
    palette = Image.fromarray(random_rgb(40, 40)).convert("P", palette=Image.ADAPTIVE, colors=16)
    path = tmp_path / "palette.png"
    palette.save(path)
    np.testing.assert_allclose(center_pixels(processor, str(path)), center_pixels(processor, palette.convert("RGB")), atol=1e-5)


def test_one_pixel_image(processor, tmp_path):
    path = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (200, 10, 30)).save(path)
    pixel_values = center_pixels(processor, str(path))
    assert pixel_values.shape == (1, 1, 3, CROP, CROP)
    np.testing.assert_allclose(unnormalize(processor, pixel_values[0, 0])[5, 5], [200, 10, 30], atol=1e-3)


def test_exif_rotation_is_applied(processor, tmp_path):
    upright = random_rgb(40, 64)
    stored = np.rot90(upright, k=-1)  # what a camera held sideways writes: rotated 90 deg clockwise
    exif = Image.Exif()
    exif[0x0112] = 8  # "rotate 90 CW to view" -> exif_transpose rotates the stored pixels back
    path = tmp_path / "rotated.jpg"
    Image.fromarray(np.ascontiguousarray(stored)).save(path, exif=exif, quality=100)
    got = processor(str(path), view_policy="resize", return_tensors="np")["pixel_values"]
    with Image.open(path) as reopened:
        reference = np.rot90(np.asarray(reopened.convert("RGB")), k=1)  # decoded pixels, turned upright
    assert reference.shape[:2] == (40, 64)
    np.testing.assert_allclose(got, processor(reference, view_policy="resize", return_tensors="np")["pixel_values"], atol=1e-5)


def test_odd_modes_from_pil(processor):
    rgb = Image.fromarray(random_rgb(36, 36))
    for mode in ("L", "LA", "1", "YCbCr", "I", "F"):
        odd = rgb.convert(mode)
        if mode == "F":
            odd = Image.fromarray(np.asarray(odd, np.float32) / 255.0)
        values = center_pixels(processor, odd)
        assert values.shape == (1, 1, 3, CROP, CROP) and np.isfinite(values).all(), mode


@pytest.mark.parametrize("policy", ["random10", "random3", "center", "five_crop", "ten_crop", "resize"])
def test_view_count_matches_the_views_cut(processor, policy):
    from modeling_uniqa.configuration_uniqa import view_count

    assert view_count(policy) == len(processor.views(Image.fromarray(random_rgb(40, 50)), policy))


# ------------------------------------------------------------------------------------------------
# Thin images: views cut from the original geometry, memory bounded, absurd shapes refused.
# ------------------------------------------------------------------------------------------------
def crops_of_the_whole_upscale(image, crop, policy, seed):
    """The views as the processor cut them before: upscale the whole image, then crop."""
    scale = crop / min(image.size)
    size = (max(crop, round(image.width * scale)), max(crop, round(image.height * scale)))
    pixels = np.asarray(image.resize(size, Image.BICUBIC))
    views = [pixels[top : top + crop, left : left + crop] for left, top, _ in crop_boxes(*size, crop, policy, seed)]
    return np.stack([view[:, ::-1] if flip else view for view, (_, _, flip) in zip(views, crop_boxes(*size, crop, policy, seed))])


@pytest.mark.parametrize("size", [(3, 250), (250, 3), (7, 90), (1, 1), (31, 33), (5, 41)])
@pytest.mark.parametrize("policy", ["random10", "ten_crop"])
def test_upscaled_views_are_bit_identical_to_cropping_the_whole_upscale(processor, size, policy):
    image = Image.fromarray(random_rgb(size[1], size[0], seed=sum(size)))
    np.testing.assert_array_equal(processor.views(image, policy, 5), crops_of_the_whole_upscale(image, CROP, policy, 5))


@pytest.mark.parametrize("size", [(1, 10000), (10000, 1)])
def test_extreme_strips_are_refused_or_cut_in_bounded_memory(tmp_path, size):
    import tracemalloc

    path = tmp_path / "strip.png"
    Image.new("RGB", size, (200, 100, 50)).save(path)
    crop, view_bytes = 224, 224 * 224 * 3
    tracemalloc.start()
    try:
        with pytest.raises(UniQAImageError, match=r"strip.png: .*aspect ratio of 10000:1"):
            UniQAImageProcessor(crop_size=crop)(str(path))
        refused_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        lenient = UniQAImageProcessor(crop_size=crop, max_aspect_ratio=1e5)
        views = lenient.views(load_image(str(path)), "random10", 0)
        cut_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert views.shape == (10, crop, crop, 3) and (views == [200, 100, 50]).all()
    assert refused_peak < 2 * view_bytes  # nothing upscaled before refusing
    # The whole upscale would be 224 x 2,240,000 x 3 bytes = 1.5 GB; the views alone are 1.5 MB.
    assert cut_peak < 40 * view_bytes


def test_max_aspect_ratio_is_saved_and_checked(tmp_path):
    UniQAImageProcessor(max_aspect_ratio=4).save_pretrained(tmp_path)
    loaded = UniQAImageProcessor.from_pretrained(tmp_path)
    assert loaded.max_aspect_ratio == 4
    with pytest.raises(UniQAImageError, match="image #0.*5:1"):
        loaded(np.zeros((10, 50, 3), np.uint8))
    with pytest.raises(ValueError, match="max_aspect_ratio"):
        UniQAImageProcessor(max_aspect_ratio=0.5)


def test_unknown_arguments_are_rejected(processor):
    image = Image.fromarray(random_rgb(40, 40))
    with pytest.raises(TypeError, match="view_polcy"):
        processor(image, view_polcy="center")
    with pytest.raises(TypeError, match="seed"):
        processor.preprocess(image, seed=3)
    with pytest.raises(ValueError, match="view policy"):
        processor(image, view_policy="eleven_crop")


def test_views_are_writable_arrays(processor):
    """`torch.from_numpy` warns on read-only arrays (the `resize` view was one, cut from a PIL image)."""
    image = Image.fromarray(random_rgb(48, 70))
    for policy in ("resize", "center", "random3"):
        assert processor.views(image, policy).flags.writeable, policy
