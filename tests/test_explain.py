"""`uniqa explain` and Grad-CAM: map size, finiteness, determinism, and maps that land where a
constructed model is known to look."""

import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_uniqa import UniQAImageProcessor
from modeling_uniqa.analysis.explain import explain_image, output_paths, prompt_target, score_target, similarity_target
from modeling_uniqa.analysis.gradcam import colorize, grad_cam
from modeling_uniqa.cli import main
from modeling_uniqa.core.zero_shot import embed_texts
from tests.helpers import TINY_IMAGE_SIZE, random_rgb

HEIGHT, WIDTH = 48, 64  # not square, and 4 x 4 patch cells of 12 x 16 pixels after the resize view
GRAY, RED, BLUE = (128, 128, 128), (255, 128, 128), (128, 128, 255)
RED_CELLS, BLUE_CELLS = [(1, 2), (2, 2)], [(3, 0)]  # (row, column): asymmetric, so a transposed grid fails


def block_picture(cells_colors: dict) -> Image.Image:
    """A grey picture with the given patch cells painted."""
    pixels = np.full((HEIGHT, WIDTH, 3), GRAY, np.uint8)
    for (row, column), color in cells_colors.items():
        pixels[row * 12 : (row + 1) * 12, column * 16 : (column + 1) * 16] = color
    return Image.fromarray(pixels)


def cell_mask(cells) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), bool)
    for row, column in cells:
        mask[row * 12 : (row + 1) * 12, column * 16 : (column + 1) * 16] = True
    return mask


def colour_reading_model(tiny_model_factory, processor):
    """A tiny UniQA whose image embedding is, by construction, "how red" (dimension 0) and "how
    blue" (dimension 1) the picture's patches are, and nothing else.

    - Patch embedding: hidden channel 0 = mean red of the patch, channel 1 = mean blue; the
      position embeddings cancel the grey background exactly, so a grey patch carries only a
      constant (channels 2, 3: it keeps LayerNorm from blowing a faint colour up to full scale).
    - Layer 0 is the identity (attention and MLP outputs zeroed).
    - The last layer's attention is uniform (zero queries and keys) with identity values and
      output, so the class token receives the mean of all tokens; its MLP is zeroed.
    - The projection reads channels 0 and 1 into embedding dimensions 0 and 1.

    So the similarity with direction e0 grows with the red patches alone and falls with the blue
    ones: Grad-CAM must light the red cells (and for e1 the blue ones), nothing else.
    """
    model = tiny_model_factory(use_adapter=False)
    vision = model.clip.vision_model
    hidden = vision.config.hidden_size
    layer_norms = [vision.pre_layrnorm, vision.post_layernorm]
    for layer in vision.encoder.layers:
        layer_norms += [layer.layer_norm1, layer.layer_norm2]
    with torch.no_grad():
        for parameter in vision.parameters():
            parameter.zero_()
        for norm in layer_norms:
            norm.weight.fill_(1.0)
        patch_size = vision.config.patch_size
        conv = vision.embeddings.patch_embedding.weight  # (hidden, 3, patch, patch)
        conv[0, 0] = conv[1, 2] = 1.0 / patch_size**2
        last = vision.encoder.layers[-1]
        last.self_attn.v_proj.weight.copy_(torch.eye(hidden))
        last.self_attn.out_proj.weight.copy_(torch.eye(hidden))
        grey = torch.from_numpy(processor.normalize_views(processor.views(block_picture({}), "resize")))
        positions = vision.embeddings.position_embedding.weight
        positions[1:] = -vision.embeddings.patch_embedding(grey)[0, :, 0, 0]
        positions[1:, 2] += 1.0
        positions[1:, 3] -= 1.0
        projection = model.clip.visual_projection.weight
        projection.zero_()
        projection[0, 0] = projection[1, 1] = 1.0
    return model


@pytest.fixture
def processor():
    return UniQAImageProcessor(crop_size=TINY_IMAGE_SIZE)


@pytest.mark.parametrize(("dimension", "lit", "dark"), [(0, RED_CELLS, BLUE_CELLS), (1, BLUE_CELLS, RED_CELLS)])
def test_maps_light_the_patches_the_target_reads(tiny_model_factory, processor, dimension, lit, dark):
    model = colour_reading_model(tiny_model_factory, processor)
    picture = block_picture({**dict.fromkeys(RED_CELLS, RED), **dict.fromkeys(BLUE_CELLS, BLUE)})
    direction = torch.eye(model.config.clip_config.projection_dim)[dimension]
    target = similarity_target(model, direction, "colour", embedding="clip")

    # On the patch grid: the cells of the target's colour are the peak, every other cell ~0.
    pixels = torch.from_numpy(processor.normalize_views(processor.views(picture, "resize")))
    maps, _ = grad_cam(model, pixels, target.function)
    grid = maps[0].numpy()
    assert grid.shape == (4, 4)
    for row, column in lit:
        assert grid[row, column] > 0.99
    others = np.ones((4, 4), bool)
    others[tuple(zip(*lit))] = False
    assert grid[others].max() < 0.05

    # At the image's size: hot inside the painted cells, cold a cell away from them.
    (explanation,) = explain_image(model, processor, picture, [target])
    heatmap = explanation.heatmap
    assert heatmap.shape == (HEIGHT, WIDTH)
    inside = cell_mask(lit)
    assert heatmap[inside].mean() > 0.5
    assert heatmap[cell_mask(dark)].max() < 0.05
    near = {(row + dr, column + dc) for row, column in lit for dr in (-1, 0, 1) for dc in (-1, 0, 1)}
    far = cell_mask([(row, column) for row in range(4) for column in range(4) if (row, column) not in near])
    assert far.any() and heatmap[far].max() < 0.05
    rows, columns = np.nonzero(heatmap > 0.9)
    assert inside[rows, columns].all()


def test_maps_have_the_image_size_are_finite_and_deterministic(tiny_model_factory, tiny_tokenizer, processor):
    model = tiny_model_factory(seed=3, prompt_groups="natural")
    picture = Image.fromarray(random_rgb(HEIGHT, WIDTH, seed=5))
    targets = [prompt_target(model, tiny_tokenizer, "blurry image"), score_target(model)]
    first = explain_image(model, processor, picture, targets)
    second = explain_image(model, processor, picture, targets)
    for one, two in zip(first, second):
        assert one.heatmap.shape == (HEIGHT, WIDTH)
        assert np.isfinite(one.heatmap).all() and one.heatmap.min() >= 0 and one.heatmap.max() <= 1
        assert one.heatmap.max() > 0.5  # something pushes the target up (bilinear upsampling may shave the peak)
        np.testing.assert_array_equal(one.heatmap, two.heatmap)
        assert one.value == two.value
        assert one.picture().size == (2 * WIDTH, HEIGHT) and one.picture(side_by_side=False).size == (WIDTH, HEIGHT)
    # the score explained is the model's score of the same (resize) view
    with torch.no_grad():
        views = torch.from_numpy(processor.normalize_views(processor.views(picture, "resize")))
        assert first[1].value == pytest.approx(model(pixel_values=views).scores.item(), abs=1e-5)


def test_prompt_target_is_the_text_direction(tiny_model_factory, tiny_tokenizer, processor):
    model = tiny_model_factory(seed=1)
    picture = random_rgb(40, 40, seed=2)
    by_prompt = explain_image(model, processor, picture, [prompt_target(model, tiny_tokenizer, "noisy image")])[0]
    direction = embed_texts(model, tiny_tokenizer, ["noisy image"])[0]
    by_direction = explain_image(model, processor, picture, [similarity_target(model, direction, "noisy image")])[0]
    np.testing.assert_array_equal(by_prompt.heatmap, by_direction.heatmap)
    with torch.no_grad():
        views = torch.from_numpy(processor.normalize_views(processor.views(Image.fromarray(picture), "resize")))
        expected = model(pixel_values=views).image_embeds[0] @ direction
    assert by_prompt.value == pytest.approx(expected.item(), abs=1e-5)


def test_a_layer_that_does_not_exist_is_an_error(tiny_model_factory, processor):
    model = tiny_model_factory()
    with pytest.raises(ValueError, match="layer 5 does not exist"):
        explain_image(model, processor, random_rgb(32, 32), [score_target(model)], layer=5)


def test_colormap_without_matplotlib(monkeypatch):
    ramp = np.linspace(0, 1, 11)[None]
    with_matplotlib = colorize(ramp)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    builtin = colorize(ramp)
    assert builtin.dtype == np.uint8 and builtin.shape == (1, 11, 3)
    assert builtin[0, 0, 2] > builtin[0, 0, 0] and builtin[0, -1, 0] > builtin[0, -1, 2]  # blue -> red
    assert with_matplotlib.shape == builtin.shape


def test_cli_writes_one_png_per_image_and_target(saved_tiny_model, tmp_path, caplog):
    inputs = tmp_path / "in"
    for folder, seed in [("a", 0), ("b", 1)]:  # the same file name twice: outputs must not collide
        (inputs / folder).mkdir(parents=True)
        Image.fromarray(random_rgb(HEIGHT, WIDTH, seed=seed)).save(inputs / folder / "photo.jpg")
    (inputs / "a" / "broken.png").write_bytes(b"not a png")
    output = tmp_path / "cams"
    code = main(["explain", str(inputs), "--model", saved_tiny_model, "--prompt", "blurry image", "--prompt", "Blurry image!", "--score", "--output", str(output)])
    assert code == 0
    written = sorted(os.path.relpath(os.path.join(root, name), output) for root, _, names in os.walk(output) for name in names)
    assert written == sorted(
        f"{folder}/photo.{slug}.png" for folder in ("a", "b") for slug in ("blurry-image", "blurry-image-2", "score")
    )
    with Image.open(output / "a" / "photo.score.png") as png:
        assert png.size == (2 * WIDTH, HEIGHT)
    assert "broken.png" in caplog.text

    assert main(["explain", str(inputs / "a" / "photo.jpg"), "--model", saved_tiny_model, "--score", "--overlay-only", "--output", str(tmp_path / "one")]) == 0
    with Image.open(tmp_path / "one" / "photo.score.png") as png:
        assert png.size == (WIDTH, HEIGHT)
    assert main(["explain", str(inputs), "--model", saved_tiny_model, "--output", str(output)]) == 2  # nothing to explain
    assert main(["explain", str(inputs / "a" / "broken.png"), "--model", saved_tiny_model, "--score", "--output", str(output)]) == 1


def test_inputs_that_differ_only_by_suffix_get_distinct_outputs():
    paths = ["/in/a.jpg", "/in/a.png", "/in/a.jpg.png", "/in/b.jpg", "/in/sub/a.jpg"]
    destinations = output_paths(paths, ["score", "blurry-image"], "/cams")
    assert len(set(destinations.values())) == len(destinations)
    assert [destinations[(path, "score")] for path in paths] == [
        "/cams/a.jpg.score.png", "/cams/a.png.score.png", "/cams/a.jpg.png.score.png", "/cams/b.score.png", "/cams/sub/a.score.png",
    ]


def test_maps_written_inside_an_input_folder_are_not_explained_again(saved_tiny_model, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(random_rgb(HEIGHT, WIDTH)).save(folder / "photo.png")
    for _ in range(2):
        assert main(["explain", str(folder), "--model", saved_tiny_model, "--score", "--output", str(folder / "cams")]) == 0
    assert sorted(os.listdir(folder / "cams")) == ["photo.score.png"]
