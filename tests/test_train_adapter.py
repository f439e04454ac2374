import json
import os
import shutil
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from transformers import AutoModel

from modeling_uniqa import UniQAImageProcessor, UniQAModel
from tests.helpers import TINY_IMAGE_SIZE, random_rgb, save_tiny_uniqa, write_rated_folder
from train_scripts import train_adapter
from train_scripts.common import finetune as finetune_module
from train_scripts.common.checkpointing import ResumeError
from train_scripts.common.errors import SettingsError
from train_scripts.common.feature_bank import EmbeddingHead, FeatureBank, bank_cache_file, embed_views, image_encoder
from train_scripts.common.finetune import FinetuneConfig, finetune, load_lora, load_splits
from train_scripts.common.image_views import BankViews, EvalViews, ImageViewDataset
from train_scripts.common.numerics import DivergenceError
from train_scripts.common.transforms import finetune_crop_flip, finetune_view_bank, upscaled_size

DATA_OPTIONS = {"split_scheme": "random", "mos_range": [1, 10]}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_tokenizer):
    """A tiny pre-trained model folder and a learnable folder_csv dataset (32 images)."""
    root = tmp_path_factory.mktemp("finetune")
    write_rated_folder(str(root / "data"), n=32)
    model_dir = save_tiny_uniqa(str(root / "model"), tiny_tokenizer)
    return {"root": root, "model": model_dir, "data": str(root / "data"), "cache": str(root / "cache")}


def _splits(workspace, **kwargs):
    return load_splits("folder_csv", workspace["data"], cache_dir=workspace["cache"], options=DATA_OPTIONS, **kwargs)


def _config(**kwargs):
    defaults = {"num_train_epochs": 3, "learning_rate": 1e-2, "backbone_learning_rate": 1e-3, "bank_crops": 2, "checkpoints_total_limit": None}
    return FinetuneConfig(**{**defaults, **kwargs})


@pytest.mark.parametrize(("mode", "feature_bank"), [("adapter", True), ("adapter", False), ("full", False), ("lora", False)])
def test_each_mode_trains_and_writes_a_uniqa_folder(workspace, tmp_path, mode, feature_bank):
    output = str(tmp_path / mode)
    config = _config(mode=mode, feature_bank=feature_bank, num_train_epochs=10, learning_rate=3e-2)
    results = finetune(workspace["model"], _splits(workspace), output, config)
    losses = [epoch["train_loss"] for epoch in results["epochs"]]
    # Per-epoch losses of a few small batches are noisy: compare the first and last three epochs.
    assert len(losses) == 10 and np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
    assert results["feature_bank"] is feature_bank and results["selection"] == "last epoch"
    assert results["num_train"] + results["num_test"] == 32
    with open(os.path.join(output, "eval_results.json")) as handle:
        written = json.load(handle)
    assert written["srcc"] == pytest.approx(results["srcc"]) and -1 <= written["plcc"] <= 1

    model = AutoModel.from_pretrained(output)  # a plain UniQA folder, LoRA merged in
    assert isinstance(model, UniQAModel)
    assert model.config.training_dataset == "folder_csv"
    assert model.config.mos_range == [1.0, 10.0] and model.config.mos_higher_is_better
    card = ModelCard.load(os.path.join(output, "README.md"))  # the model_cards card, with a model-index
    (entry,) = [result for result in card.data.eval_results if result.metric_name == "SRCC"]
    assert entry.dataset_type == "folder_csv" and entry.metric_value == pytest.approx(results["srcc"], abs=1e-4)
    # The saved model scores the test images as the training run did (its evaluation path).
    processor = UniQAImageProcessor.from_pretrained(output)
    splits = _splits(workspace)
    with torch.no_grad():
        scores = model.eval()(**processor(list(splits.test["image_path"]))).scores.numpy()
    np.testing.assert_allclose(scores, results["predictions"], atol=1e-5)
    if mode == "adapter":  # the backbone did not move
        trained = model.clip.state_dict()
        for name, value in UniQAModel.from_pretrained(workspace["model"]).clip.state_dict().items():
            torch.testing.assert_close(trained[name], value)


def test_several_train_views_per_image_train_on_the_mean_score(workspace, tmp_path):
    config = _config(train_views=3, num_train_epochs=10, learning_rate=3e-2)
    results = finetune(workspace["model"], _splits(workspace), str(tmp_path / "views"), config)
    losses = [epoch["train_loss"] for epoch in results["epochs"]]
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
    assert results["config"]["train_views"] == 3
    one_view = finetune(workspace["model"], _splits(workspace), str(tmp_path / "one"), _config(num_train_epochs=10, learning_rate=3e-2))
    assert one_view["epochs"][0]["train_loss"] != results["epochs"][0]["train_loss"]  # the flag changes what trains


def test_lora_saves_reloads_and_merges(workspace, tmp_path):
    output = str(tmp_path / "lora")
    results = finetune(workspace["model"], _splits(workspace), output, _config(mode="lora", num_train_epochs=2))
    lora_dir = os.path.join(output, train_adapter.LORA_DIR)
    assert {"adapter_config.json", "adapter_model.safetensors", train_adapter.LORA_HEAD_FILE} <= set(os.listdir(lora_dir))
    peft_model = load_lora(workspace["model"], lora_dir)  # PeftModel.from_pretrained + level scores
    assert any("lora_A" in name for name, _ in peft_model.named_parameters())
    pixels = UniQAImageProcessor.from_pretrained(output)(list(_splits(workspace).test["image_path"]))["pixel_values"]
    with torch.no_grad():
        reloaded = peft_model.eval()(pixel_values=pixels).scores
        merged = peft_model.merge_and_unload().eval()(pixel_values=pixels).scores
        saved = UniQAModel.from_pretrained(output).eval()(pixel_values=pixels).scores
    torch.testing.assert_close(reloaded, merged, atol=1e-5, rtol=0)
    torch.testing.assert_close(saved, merged, atol=1e-5, rtol=0)
    np.testing.assert_allclose(saved.numpy(), results["predictions"], atol=1e-5)
    # Without the level scores file, reloading refuses instead of scoring with the wrong head.
    os.remove(os.path.join(lora_dir, train_adapter.LORA_HEAD_FILE))
    with pytest.raises(FileNotFoundError, match="level scores"):
        load_lora(workspace["model"], lora_dir)


def test_resume_from_a_mid_epoch_checkpoint_gives_the_same_model(workspace, tmp_path):
    splits = _splits(workspace)
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    config = _config(num_train_epochs=3, checkpointing_steps=3)  # 4 steps an epoch: step 6 is mid-epoch 2
    expected = finetune(workspace["model"], splits, straight, config)
    # Checkpoints lie beside the model folder, not in it.
    assert not [name for name in os.listdir(straight) if name.startswith("checkpoint-")]
    shutil.copytree(os.path.join(straight + ".checkpoints", "checkpoint-6"), os.path.join(resumed + ".checkpoints", "checkpoint-6"))
    with open(os.path.join(resumed + ".checkpoints", "checkpoint-6", "training_progress.json")) as handle:
        assert [epoch["epoch"] for epoch in json.load(handle)["epochs"]] == [1]
    got = finetune(workspace["model"], splits, resumed, _config(num_train_epochs=3, checkpointing_steps=3, resume_from_checkpoint="latest"))
    assert [epoch["epoch"] for epoch in got["epochs"]] == [1, 2, 3]
    np.testing.assert_allclose(got["predictions"], expected["predictions"], atol=1e-6)
    first, second = load_file(os.path.join(straight, "model.safetensors")), load_file(os.path.join(resumed, "model.safetensors"))
    for name in ("adapter.fc.0.weight", "level_scores"):
        torch.testing.assert_close(first[name], second[name])


def test_model_selection_is_honest_by_default_and_labelled(workspace, tmp_path):
    splits = _splits(workspace)
    carved = finetune(workspace["model"], splits, str(tmp_path / "val"), _config(validation_fraction=0.25))
    assert carved["selection"].startswith("best epoch on a validation part (25% carved")
    assert carved["num_train"] == round(0.75 * len(splits.train)) and 1 <= carved["selected_epoch"] <= 3
    assert all("selection_srcc" in epoch for epoch in carved["epochs"])
    on_test = finetune(workspace["model"], splits, str(tmp_path / "test"), _config(select_on_test=True))
    assert "optimistic" in on_test["selection"]
    assert on_test["srcc"] == pytest.approx(max(epoch["selection_srcc"] for epoch in on_test["epochs"]))


def test_an_undefined_selection_srcc_at_every_epoch_is_reported_not_hidden(workspace, tmp_path, monkeypatch):
    monkeypatch.setattr(finetune_module, "srcc", lambda predictions, targets: float("nan"))  # constant predictions
    results = finetune(workspace["model"], _splits(workspace), str(tmp_path / "nan"), _config(select_on_test=True, num_train_epochs=2))
    assert results["selection"] == "last epoch (the selection SRCC was undefined at every epoch)"
    assert results["selected_epoch"] == 2


def test_command_line_with_few_label_and_prompts(workspace, tmp_path, caplog):
    output = str(tmp_path / "cli")
    args = train_adapter.parse_args([
        "--model", workspace["model"], "--dataset", "folder_csv", "--data_dir", workspace["data"], "--output_dir", output,
        "--few_label", "10", "--repeat", "1", "--num_train_epochs", "2", "--prompts", "sharpness,noise",
        "--cache_dir", workspace["cache"], "--dataset_option", "split_scheme=random", "--dataset_option", "mos_range=[1,10]",
        "--seed", "7", "--resume_from_checkpoint", "latest",
    ])
    assert train_adapter.finetune_config(args, "clive", checkpointing=args).num_train_epochs == 2
    results = train_adapter.main(args)
    assert "No checkpoint in" in caplog.text and "starting a new run" in caplog.text  # latest with nothing yet: said
    assert results["num_train"] == 10 and results["config"]["prompts"] == "sharpness,noise"
    # The training seed never moves the split: the test images are those of the default split (seed 123).
    with open(os.path.join(output, "test_predictions.csv")) as handle:
        tested = sorted(line.split(",")[0] for line in handle.readlines()[1:])
    assert tested == sorted(_splits(workspace).test["image_name"])
    assert UniQAModel.from_pretrained(output).config.prompt_group_names == ["sharpness", "noise"]


def test_feature_bank_flag_takes_the_documented_spelling():
    base = ["--model", "m", "--dataset", "live", "--data_dir", "d", "--output_dir", "o"]
    assert train_adapter.parse_args(base).feature_bank is None  # the mode decides
    assert train_adapter.parse_args([*base, "--feature_bank"]).feature_bank is True
    for spelling in ("--no_feature_bank", "--no-feature_bank"):  # README's, and argparse's old one
        assert train_adapter.parse_args([*base, spelling]).feature_bank is False


def test_epoch_presets_and_bad_configs():
    args = train_adapter.parse_args(["--model", "m", "--dataset", "live", "--data_dir", "d", "--output_dir", "o"])
    assert train_adapter.finetune_config(args, "live").num_train_epochs == 50
    assert train_adapter.finetune_config(args, "ava").num_train_epochs == 10
    assert train_adapter.finetune_config(args, "koniq10k").num_train_epochs == 20
    assert FinetuneConfig(mode="full").backbone_learning_rate == 2e-6
    assert FinetuneConfig().feature_bank and not FinetuneConfig(mode="lora").feature_bank
    with pytest.raises(ValueError, match="adapter mode only"):
        FinetuneConfig(mode="full", feature_bank=True)
    with pytest.raises(ValueError, match="mode must be one of"):
        FinetuneConfig(mode="partial")
    with pytest.raises(ValueError, match="checkpoints_total_limit must be >= 1"):  # 0 would mean "no limit", silently
        FinetuneConfig(checkpoints_total_limit=0)
    with pytest.raises(ValueError, match="checkpointing_steps must be >= 1"):
        FinetuneConfig(checkpointing_steps=0)
    with pytest.raises(SettingsError, match="needs the feature bank"):  # a user error: one line and exit 2
        FinetuneConfig(train_views=2, feature_bank=False)
    with pytest.raises(SettingsError, match="Unknown view policy"):  # checks of other modules too
        FinetuneConfig(view_policy="sideways")
    with pytest.raises(ValueError, match="exceeds the bank's 4 views"):
        FinetuneConfig(train_views=5, bank_crops=2)
    with pytest.raises(SettingsError, match="bank_halved_crops"):
        FinetuneConfig(bank_halved_crops=3, bank_crops=2)


def test_a_bank_with_halved_crops_trains_for_pyramid_views_and_the_folder_keeps_them(workspace, tmp_path):
    # Images of 70 px on their short side: at crop 32, the halved image (35 px) gives crops.
    data = str(tmp_path / "large")
    write_rated_folder(data, n=16, size=(70, 80))
    splits = load_splits("folder_csv", data, cache_dir=workspace["cache"], options=DATA_OPTIONS)
    output = str(tmp_path / "pyramid")
    results = finetune(workspace["model"], splits, output, _config(bank_halved_crops=1, view_policy="pyramid4", bank_cache_dir=str(tmp_path / "banks")))
    assert results["view_policy"] == "pyramid4" and results["feature_bank"]
    processor = UniQAImageProcessor.from_pretrained(output)
    model = AutoModel.from_pretrained(output).eval()
    assert processor.view_policy == model.config.view_policy == "pyramid4"
    with torch.no_grad():
        scores = model(**processor(list(splits.test["image_path"]))).scores.numpy()
    np.testing.assert_allclose(scores, results["predictions"], atol=1e-5)
    plain = finetune(workspace["model"], splits, str(tmp_path / "plain"), _config(view_policy="pyramid4", bank_cache_dir=str(tmp_path / "banks")))
    assert len(os.listdir(tmp_path / "banks")) == 2  # the halved crops are part of the bank's cache key
    assert not np.allclose(plain["predictions"], results["predictions"])


def test_head_on_bank_embeddings_equals_the_model_forward(tiny_model_factory, tmp_path):
    model = tiny_model_factory()
    processor = UniQAImageProcessor(crop_size=TINY_IMAGE_SIZE)
    paths = []
    for index, shape in enumerate([(40, 56), (20, 24)]):  # the second is upscaled to the crop
        paths.append(str(tmp_path / f"{index}.png"))
        from PIL import Image

        Image.fromarray(random_rgb(*shape, seed=index)).save(paths[-1])
    accelerator = Accelerator(cpu=True)
    views = ImageViewDataset(paths, processor, EvalViews(processor, "random10", 123))
    embeds = embed_views(image_encoder(model), views, 10, accelerator, batch_size=7)
    with torch.no_grad():
        expected = model(**processor(paths, view_policy="random10")).scores
        got = EmbeddingHead(model)(embeds)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)

    bank_views = ImageViewDataset(paths, processor, BankViews(TINY_IMAGE_SIZE, seed=5, num_crops=3))
    cache = bank_cache_file(str(tmp_path / "banks"), model, paths, {"crops": 3})
    bank = FeatureBank.build(image_encoder(model), bank_views, 6, accelerator, cache_file=cache)
    assert bank.features.shape == (2, 6, 16) and os.path.isfile(cache)
    again = FeatureBank.build(None, bank_views, 6, accelerator, cache_file=cache)  # from the cache, no encoder needed
    torch.testing.assert_close(again.features, bank.features)
    views = bank.draw_views(torch.Generator().manual_seed(0))
    sample = bank.sample(torch.tensor([1, 0, 1]), views)
    assert views.shape == (2,) and sample.shape == (3, 16)
    torch.testing.assert_close(sample[0], bank.features[1, views[1]])
    torch.testing.assert_close(sample[1], bank.features[0, views[0]])
    # Several distinct views per image, whose scores the head averages.
    views = bank.draw_views(torch.Generator().manual_seed(0), count=4)
    sample = bank.sample(torch.tensor([1, 0]), views)
    assert views.shape == (2, 4) and sample.shape == (2, 4, 16)
    assert all(len(set(row.tolist())) == 4 for row in views)
    torch.testing.assert_close(sample[0], bank.features[1, views[1]])
    with pytest.raises(ValueError, match="1..6"):
        bank.draw_views(torch.Generator(), count=7)


def test_train_transforms():
    from PIL import Image

    image = Image.fromarray(random_rgb(30, 50, seed=1))
    rng = np.random.default_rng(0)
    crops = [finetune_crop_flip(image, 24, rng) for _ in range(20)]
    assert all(crop.shape == (24, 24, 3) and crop.dtype == np.uint8 for crop in crops)
    assert len({crop.tobytes() for crop in crops}) > 10  # positions and flips vary
    bank = finetune_view_bank(image, 24, np.random.default_rng(0), num_crops=4)
    assert bank.shape == (8, 24, 24, 3)
    np.testing.assert_array_equal(bank[1], bank[0][:, ::-1])  # each crop and its mirror image
    large = Image.fromarray(random_rgb(60, 70, seed=2))
    halved = finetune_view_bank(large, 24, np.random.default_rng(0), num_crops=4, halved_crops=1)
    np.testing.assert_array_equal(halved[:6], finetune_view_bank(large, 24, np.random.default_rng(0), num_crops=3))
    small = np.asarray(large.reduce(2))  # 35 x 30: the last crop and its mirror come from it
    assert any(np.array_equal(halved[6], small[top : top + 24, left : left + 24]) for top in range(7) for left in range(12))
    np.testing.assert_array_equal(halved[7], halved[6][:, ::-1])
    # Too small to halve (short side under 2 x 24): the bank is the plain one.
    np.testing.assert_array_equal(finetune_view_bank(image, 24, np.random.default_rng(0), 4, halved_crops=2), bank)
    with pytest.raises(ValueError, match="halved_crops"):
        finetune_view_bank(large, 24, np.random.default_rng(0), num_crops=2, halved_crops=3)
    assert upscaled_size(Image.fromarray(random_rgb(10, 20)), 24) == (48, 24)
    assert upscaled_size(image, 24) == image.size  # native resolution kept


def test_two_process_ddp_run_with_the_feature_bank(workspace, tmp_path):
    """Real 2-process CPU DDP: the bank is embedded in shares and gathered, the adapter trains."""
    from tests.helpers import launch_two_processes

    output = tmp_path / "ddp"
    completed = launch_two_processes([
        "train_scripts/train_adapter.py", "--model", workspace["model"], "--dataset", "folder_csv", "--data_dir", workspace["data"],
        "--output_dir", output, "--num_train_epochs", "2", "--bank_crops", "1", "--cache_dir", workspace["cache"],
        "--dataset_option", "split_scheme=random", "--dataset_option", "mos_range=[1,10]",
    ])
    assert completed.returncode == 0, completed.stderr[-3000:]
    with open(output / "eval_results.json") as handle:
        results = json.load(handle)
    assert results["num_train"] == 26 and len(results["epochs"]) == 2
    assert UniQAModel.from_pretrained(str(output)).config.training_dataset == "folder_csv"


def test_epoch_batches_cover_every_item_with_equal_steps_per_process():
    shares = [train_adapter.epoch_batches(11, 2, seed=123, epoch=4, process_index=rank, num_processes=3) for rank in range(3)]
    assert len({len(batches) for batches in shares}) == 1  # DDP: every process runs the same number of steps
    items = [index for batches in shares for batch in batches for index in batch]
    assert set(items) == set(range(11)) and len(items) == 12  # one item repeated to even the shares
    assert shares[0] == train_adapter.epoch_batches(11, 2, seed=123, epoch=4, process_index=0, num_processes=3)
    assert shares[0] != train_adapter.epoch_batches(11, 2, seed=123, epoch=5, process_index=0, num_processes=3)


def test_image_views_read_paths_and_embedded_bytes_alike_and_name_bad_files(workspace, tmp_path):
    from modeling_uniqa.processing_uniqa import UniQAImageError
    from train_scripts.common.image_views import image_sources

    processor = UniQAImageProcessor(crop_size=TINY_IMAGE_SIZE)
    by_path = load_splits("folder_csv", workspace["data"], cache_dir=workspace["cache"], options=DATA_OPTIONS).test
    embedded = load_splits("folder_csv", workspace["data"], cache_dir=str(tmp_path / "cache"), options={**DATA_OPTIONS, "embed_images": True}).test
    sources = image_sources(embedded)
    assert all(isinstance(source, tuple) for source in sources) and all(isinstance(source, str) for source in image_sources(by_path))
    views = EvalViews(processor, "five_crop", 123)
    for (_, first), (_, second) in zip(ImageViewDataset(image_sources(by_path), processor, views), ImageViewDataset(sources, processor, views)):
        torch.testing.assert_close(first, second)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(UniQAImageError, match="broken.png"):
        ImageViewDataset([str(broken)], processor, views)[0]


def test_resume_refuses_changed_settings_and_fresh_runs_over_an_earlier_run(workspace, tmp_path):
    splits, output = _splits(workspace), str(tmp_path / "run")
    finished = finetune(workspace["model"], splits, output, _config(num_train_epochs=1))
    with pytest.raises(ResumeError, match=r"holds an earlier run \(\S+run\.checkpoints/checkpoint-4, a saved model"):
        finetune(workspace["model"], splits, output, _config(num_train_epochs=1))  # a fresh start would mix runs
    with pytest.raises(ResumeError, match="per_device_train_batch_size: 8 then, 4 now"):
        finetune(workspace["model"], splits, output, _config(num_train_epochs=1, per_device_train_batch_size=4, resume_from_checkpoint="latest"))
    with pytest.raises(ResumeError, match=r"train_images: '\w+' then"):  # another split's training images
        finetune(workspace["model"], _splits(workspace, split_index=1), output, _config(num_train_epochs=1, resume_from_checkpoint="latest"))
    # The same settings resume the finished run: nothing left to train, the same model again.
    again = finetune(workspace["model"], splits, output, _config(num_train_epochs=1, resume_from_checkpoint="latest", eval_batch_size=7))
    np.testing.assert_allclose(again["predictions"], finished["predictions"], atol=1e-6)


@pytest.mark.parametrize("mode", ["adapter", "full"])
def test_a_diverging_run_stops_at_the_step_and_saves_no_model(workspace, tmp_path, mode):
    output = str(tmp_path / mode)
    config = _config(mode=mode, learning_rate=float("inf"), backbone_learning_rate=float("inf"), num_train_epochs=2)
    with pytest.raises(DivergenceError, match="not finite at step 2"):  # step 1 makes the weights infinite
        finetune(workspace["model"], _splits(workspace), output, config)
    assert not os.path.exists(os.path.join(output, "config.json"))


def test_empty_training_split_and_too_small_test_split_are_refused_before_training(workspace, tmp_path):
    splits = _splits(workspace)
    empty = replace(splits, train=splits.train.select([]))
    with pytest.raises(ValueError, match="training split of folder_csv is empty"):
        finetune(workspace["model"], empty, str(tmp_path / "a"), _config())
    tiny_test = replace(splits, test=splits.test.select([0, 1]))
    with pytest.raises(ValueError, match="test part holds 2 images: its correlations need at least 3"):
        finetune(workspace["model"], tiny_test, str(tmp_path / "b"), _config())
    assert not os.path.exists(str(tmp_path / "b.checkpoints" / "checkpoint-4"))


def test_trained_cards_inherit_the_licence_and_leave_out_undefined_correlations(saved_tiny_model, tmp_path):
    """Weights trained from the authors' non-commercial release stay non-commercial on their
    card; a NaN correlation (constant predictions) is no model-index number."""
    from model_cards import write_model_card

    start, trained = tmp_path / "start", tmp_path / "trained"
    shutil.copytree(saved_tiny_model, start)
    shutil.copytree(saved_tiny_model, trained)
    write_model_card(str(start), source={"kind": "authors-release", "checkpoint": "UniQA_weight.pt"})
    results = {"srcc": 0.81, "plcc": float("nan"), "split": {"scheme": "random", "index": 0}, "selection": "last epoch",
               "view_policy": "random10", "mode": "adapter", "num_train": 24, "num_test": 6, "config": asdict(FinetuneConfig())}
    train_adapter.write_trained_card(str(trained), str(start), {"dataset": "koniq10k", "task": "quality"}, results)
    card = ModelCard.load(trained / "README.md")
    assert card.data.license == "other" and card.data.to_dict()["license_name"] == "uniqa-weights-non-commercial"
    assert [(r.dataset_type, r.metric_name, r.metric_value) for r in card.data.eval_results] == [("koniq10k", "SRCC", 0.81)]
    assert "learning rate: 0.0002" in card.text and str(start) in card.text
