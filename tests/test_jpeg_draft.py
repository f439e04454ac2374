"""JPEG draft decoding (`UniQAImageProcessor(jpeg_draft=True)`, `uniqa score --jpeg-draft`):
used only where the views downsize anyway, never below the size they go to, upright, close to
the full decode, saved with the processor and part of the scoring fingerprint."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_uniqa import UniQAImageProcessor, load_image
from modeling_uniqa.cli import main
from modeling_uniqa.core.model_folder import load_model
from modeling_uniqa.scoring.score_images import decode_views
from tests.helpers import TINY_IMAGE_SIZE, random_rgb

# Largest score change by draft decoding measured on the tiny random test models (crop 32,
# 192-248 x 256 JPEGs, resize / shortest_edge=48 views, seeds 0-2): 0.0046. See the README's
# Performance section for the demo model and ViT-B/16.
SCORE_TOLERANCE = 0.01


def save_jpeg(path, height=192, width=256, seed=0, **save_kwargs):
    Image.fromarray(random_rgb(height, width, seed=seed)).save(path, quality=90, **save_kwargs)
    return str(path)


@pytest.mark.parametrize(
    "kwargs, policy, expected",
    [
        ({}, "resize", None),  # off by default: scores as before
        ({"jpeg_draft": True}, "resize", 32),
        ({"jpeg_draft": True, "shortest_edge": 48}, "resize", 48),  # the short-side resize comes first
        ({"jpeg_draft": True, "shortest_edge": 20}, "resize", 32),  # ... then the squeeze to crop x crop
        ({"jpeg_draft": True, "shortest_edge": 48}, "center", 48),
        ({"jpeg_draft": True, "shortest_edge": 48}, "random10", 48),
        ({"jpeg_draft": True}, "center", None),  # crops of the native resolution: never drafted
        ({"jpeg_draft": True}, "five_crop", None),
        ({"jpeg_draft": True}, "ten_crop", None),
        ({"jpeg_draft": True}, "random10", None),
    ],
)
def test_draft_only_where_the_views_downsize(kwargs, policy, expected):
    assert UniQAImageProcessor(crop_size=32, **kwargs).draft_size(policy) == expected


def test_draft_reduces_jpegs_only_and_keeps_the_short_side(tmp_path):
    jpeg = save_jpeg(tmp_path / "a.jpg", 192, 256)
    png = tmp_path / "a.png"
    Image.open(jpeg).save(png)
    assert load_image(jpeg).size == (256, 192)
    for size, expected in [(32, (64, 48)), (48, (64, 48)), (49, (128, 96)), (96, (128, 96)), (97, (256, 192))]:
        drafted = load_image(jpeg, draft_size=size)
        assert drafted.size == expected, size
        assert min(drafted.size) >= size
    assert load_image(str(png), draft_size=32).size == (256, 192)  # PNG: decoded whole
    mpo = tmp_path / "a.mpo"  # phones' multi-picture JPEGs: the first frame, drafted
    Image.open(jpeg).save(mpo, save_all=True, append_images=[Image.fromarray(random_rgb(192, 256, seed=9))])
    assert load_image(str(mpo), draft_size=32).size == (64, 48)
    # Odd sizes round up: both sides stay >= the requested size.
    odd = load_image(save_jpeg(tmp_path / "odd.jpg", 131, 77), draft_size=19)
    assert odd.size == (20, 33) and min(odd.size) >= 19


def test_processor_uses_draft_for_resize_and_shortest_edge_only(tmp_path, monkeypatch):
    from modeling_uniqa import processing_uniqa

    path = save_jpeg(tmp_path / "a.jpg")
    asked, original = [], processing_uniqa._draft
    monkeypatch.setattr(processing_uniqa, "_draft", lambda image, size: (asked.append(size), original(image, size)))
    processor = UniQAImageProcessor(crop_size=32, jpeg_draft=True)
    for policy in ("center", "five_crop", "ten_crop", "random10"):
        processor(path, view_policy=policy)
    processor(path, view_policy="resize")
    UniQAImageProcessor(crop_size=32, shortest_edge=40, jpeg_draft=True)(path, view_policy="center")
    UniQAImageProcessor(crop_size=32)(path, view_policy="resize")
    assert asked == [None] * 4 + [32, 40, None]


def test_exif_rotated_jpeg_is_upright_with_draft(tmp_path):
    upright = np.asarray(Image.fromarray(random_rgb(10, 16, seed=4)).resize((256, 160), Image.BICUBIC))  # landscape as seen
    exif = Image.Exif()
    exif[0x0112] = 8  # stored rotated: exif_transpose turns it back
    path = tmp_path / "rotated.jpg"
    Image.fromarray(np.ascontiguousarray(np.rot90(upright, k=-1))).save(path, exif=exif, quality=95)
    full = load_image(str(path))
    drafted = load_image(str(path), draft_size=60)
    assert full.size == (256, 160) and drafted.size == (128, 80)  # upright, short side >= 60
    expected = np.asarray(full.resize(drafted.size, Image.BICUBIC), dtype=np.float32)
    error = np.abs(np.asarray(drafted, dtype=np.float32) - expected).mean()
    upside_down = np.abs(np.rot90(np.asarray(drafted), k=2).astype(np.float32) - expected).mean()
    assert error < 2 and upside_down > 20, (error, upside_down)  # the same picture, the same way up


def test_bytes_and_paths_give_the_same_drafted_views(tmp_path):
    """Tar shards and `datasets` hand `decode_views` encoded bytes: drafted there too."""
    path = save_jpeg(tmp_path / "a.jpg")
    with open(path, "rb") as handle:
        payload = handle.read()
    drafting = UniQAImageProcessor(crop_size=32, jpeg_draft=True)
    from_path, error, _ = decode_views(path, drafting, "resize", 0, "a.jpg")
    from_bytes, error_bytes, _ = decode_views(payload, drafting, "resize", 0, "a.jpg")
    full, _, _ = decode_views(payload, UniQAImageProcessor(crop_size=32), "resize", 0, "a.jpg")
    assert error is None and error_bytes is None
    assert torch.equal(from_path, from_bytes)
    assert not torch.equal(from_bytes, full)  # drafted: close, not bit-exact
    assert (from_bytes.float() - full.float()).abs().mean() < 4
    processed = drafting(Image.open(io.BytesIO(payload)), view_policy="resize", return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(processed[0], drafting.normalize_views(from_path.numpy()), atol=1e-6)


def test_draft_scores_are_close_to_full_decoding(tiny_model_factory, tmp_path):
    paths = [save_jpeg(tmp_path / f"{index}.jpg", 192 + 8 * index, 256, seed=index) for index in range(6)]
    model = tiny_model_factory(seed=0).eval()
    for kwargs, policy in [({}, "resize"), ({"shortest_edge": 48}, "center")]:
        scores = {}
        for draft in (False, True):
            processor = UniQAImageProcessor(crop_size=TINY_IMAGE_SIZE, jpeg_draft=draft, **kwargs)
            with torch.no_grad():
                scores[draft] = model(**processor(paths, view_policy=policy)).scores
        difference = (scores[True] - scores[False]).abs().max().item()
        assert 0 < difference < SCORE_TOLERANCE, (policy, difference)


def test_processor_round_trips_jpeg_draft(tmp_path):
    UniQAImageProcessor(jpeg_draft=True, shortest_edge=256).save_pretrained(tmp_path / "on")
    assert json.loads((tmp_path / "on" / "preprocessor_config.json").read_text())["jpeg_draft"] is True
    assert UniQAImageProcessor.from_pretrained(tmp_path / "on").jpeg_draft is True
    UniQAImageProcessor().save_pretrained(tmp_path / "off")
    assert UniQAImageProcessor.from_pretrained(tmp_path / "off").jpeg_draft is False


def test_resume_with_another_jpeg_draft_is_refused(saved_tiny_model, tmp_path, caplog):
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(3):
        save_jpeg(folder / f"{index}.jpg", 96, 128, seed=index)
    output = tmp_path / "scores.csv"
    base = ["score", str(folder), "--model", saved_tiny_model, "--output", str(output), "--workers", "0", "--view-policy", "resize"]
    assert main(base) == 0
    full = output.read_text()
    assert main([*base, "--resume"]) == 0  # an output made before the option existed matches a run without it
    caplog.clear()
    assert main([*base, "--jpeg-draft", "--resume"]) == 2
    assert "cannot resume" in caplog.text and "jpeg_draft: was None, now True" in caplog.text
    assert output.read_text() == full
    assert main([*base, "--jpeg-draft"]) == 0
    drafted = output.read_text()
    assert drafted != full
    meta = json.loads((tmp_path / "scores.csv.meta.json").read_text())
    assert meta["fingerprint"]["jpeg_draft"] is True
    caplog.clear()
    assert main([*base, "--no-jpeg-draft", "--resume"]) == 2
    assert "jpeg_draft: was True, now None" in caplog.text
    # With crops of the native resolution the option changes nothing: said, and not recorded.
    caplog.clear()
    center = ["score", str(folder), "--model", saved_tiny_model, "--output", str(tmp_path / "c.csv"), "--workers", "0", "--view-policy", "center"]
    assert main([*center, "--jpeg-draft"]) == 0
    assert "--jpeg-draft has no effect with the center views" in caplog.text
    assert main([*center, "--resume"]) == 0


def test_image_scorer_passes_jpeg_draft_on(saved_tiny_model, tmp_path):
    """Tar shards, `datasets` and Ray score through `ImageScorer`: the option and its fingerprint reach them."""
    from modeling_uniqa.scoring.image_scorer import ImageScorer

    with open(save_jpeg(tmp_path / "a.jpg"), "rb") as handle:
        payload = handle.read()
    drafting = ImageScorer(saved_tiny_model, view_policy="resize", device="cpu", jpeg_draft=True)
    full = ImageScorer(saved_tiny_model, view_policy="resize", device="cpu")
    assert drafting.fingerprint["jpeg_draft"] is True and "jpeg_draft" not in full.fingerprint
    drafted_views, full_views = drafting.decode(payload, "a")[0], full.decode(payload, "a")[0]
    assert not torch.equal(drafted_views, full_views)
    assert torch.equal(drafted_views, decode_views(payload, UniQAImageProcessor(crop_size=TINY_IMAGE_SIZE, jpeg_draft=True), "resize", 0, "a")[0])


def test_evaluation_views_decode_as_uniqa_score_and_training_crops_never_draft(tmp_path):
    """`evaluate.py` / `train_adapter.py` test views of a `jpeg_draft` processor are `uniqa
    score`'s views (paths and embedded bytes alike); training crops see the full resolution."""
    from train_scripts.common.image_views import BankViews, EvalViews, ImageViewDataset, TrainCrop

    path = save_jpeg(tmp_path / "a.jpg")
    with open(path, "rb") as handle:
        payload = handle.read()
    drafting = UniQAImageProcessor(crop_size=TINY_IMAGE_SIZE, jpeg_draft=True)
    expected, error, _ = decode_views(path, drafting, "resize", 7, "a.jpg")
    assert error is None
    for source in (path, ("a.jpg", payload)):
        _, views = ImageViewDataset([source], drafting, EvalViews(drafting, "resize", 7))[0]
        assert torch.equal(views, torch.from_numpy(drafting.normalize_views(expected.numpy())))
    full = UniQAImageProcessor(crop_size=TINY_IMAGE_SIZE)
    _, undrafted = ImageViewDataset([path], full, EvalViews(full, "resize", 7))[0]
    assert not torch.equal(views, undrafted)  # the draft changes these views: the check above means something

    class Recording:  # a view maker that notes the size of the image it is given
        def __init__(self, maker):
            self.maker, self.draft_size = maker, maker.draft_size

        def __call__(self, image, index, epoch):
            sizes.append(image.size)
            return self.maker(image, index, epoch)

    sizes = []
    for maker in (EvalViews(drafting, "resize", 7), TrainCrop(TINY_IMAGE_SIZE, seed=0), BankViews(TINY_IMAGE_SIZE, seed=0, num_crops=2)):
        ImageViewDataset([path], drafting, Recording(maker))[0]
    assert sizes == [(64, 48), (256, 192), (256, 192)]  # drafted for evaluation only


def test_evaluate_predict_equals_uniqa_score_of_a_jpeg_draft_model(tmp_path, tiny_tokenizer):
    """`evaluate.py` scores a model whose saved processor drafts JPEGs as `uniqa score` does."""
    import csv

    from datasets import Dataset
    from datasets import Image as ImageFeature

    from tests.helpers import save_tiny_uniqa
    from train_scripts import evaluate as evaluation

    model_dir = save_tiny_uniqa(tmp_path / "model", tiny_tokenizer, view_policy="resize")
    UniQAImageProcessor(crop_size=TINY_IMAGE_SIZE, view_policy="resize", jpeg_draft=True).save_pretrained(model_dir)
    paths = [save_jpeg(tmp_path / f"{index}.jpg", 192 + 8 * index, 256, seed=index) for index in range(3)]
    output = tmp_path / "scores.csv"
    assert main(["score", *paths, "--model", model_dir, "--output", str(output), "--workers", "0"]) == 0
    with open(output, newline="") as handle:
        expected = [float(row["score"]) for row in csv.DictReader(handle)]
    model, processor, _ = load_model(model_dir)
    data = Dataset.from_dict({"image": paths}).cast_column("image", ImageFeature())
    np.testing.assert_allclose(evaluation.predict(model, processor, data), expected, atol=1e-6, rtol=0)
    processor.jpeg_draft = False  # the full decode scores otherwise: the draft is what made them equal
    assert np.abs(evaluation.predict(model, processor, data) - expected).max() > 1e-5
