"""Adapters alone: save_adapter / load_adapter round trips, backbone identity, LoRA."""

import json
import os

import pytest
import torch

from modeling_uniqa import UniQAModel
from modeling_uniqa.core.adapter_io import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_WEIGHTS_NAME,
    AdapterMismatchError,
    backbone_digest,
    load_adapter,
    save_adapter,
)

PIXELS = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def scores(model, pixels=PIXELS):
    with torch.no_grad():
        return model(pixel_values=pixels).scores


@pytest.fixture
def trained(tiny_model_factory):
    """A fine-tuned-looking model: adapter, moved level scores, two prompt groups, DMOS metadata."""
    model = tiny_model_factory(
        seed=0, prompt_groups=["sharpness", "noise"], mos_range=[0, 9], mos_higher_is_better=False, training_dataset="tid2013"
    )
    with torch.no_grad():
        model.level_scores.copy_(torch.tensor([0.1, 0.3, 0.45, 0.7, 0.95]))
    return model


@pytest.fixture
def base_dir(trained, tiny_model_factory, tmp_path):
    """The zero-shot base the adapter was trained on: same CLIP weights, no adapter, default prompts."""
    base = tiny_model_factory(seed=0, use_adapter=False)
    base.clip.load_state_dict(trained.clip.state_dict())
    base.save_pretrained(tmp_path / "base")
    return str(tmp_path / "base")


def test_round_trip_onto_zero_shot_base(trained, base_dir, tmp_path):
    adapter_dir = save_adapter(trained, tmp_path / "adapter", base_name="org/uniqa-base")
    assert sorted(os.listdir(adapter_dir)) == sorted([ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME])  # no card: model_cards writes it
    with open(os.path.join(adapter_dir, ADAPTER_CONFIG_NAME)) as handle:
        metadata = json.load(handle)
    assert metadata["base_model"] == {"name": "org/uniqa-base", "backbone_sha256": backbone_digest(trained.clip)}
    # Only the head travels: adapter + level scores + prompt embeddings (+ header).
    head_bytes = sum(t.numel() * t.element_size() for t in [*trained.adapter.parameters(), trained.level_scores, trained.prompt_embeds])
    assert os.path.getsize(os.path.join(adapter_dir, ADAPTER_WEIGHTS_NAME)) < head_bytes + 2048

    loaded = load_adapter(base_dir, adapter_dir)
    assert isinstance(loaded, UniQAModel) and not loaded.training
    torch.testing.assert_close(scores(loaded), scores(trained))
    for field in ("prompt_groups", "prompt_group_names", "prompt_input_ids", "mos_range", "mos_higher_is_better", "training_dataset", "task"):
        assert getattr(loaded.config, field) == getattr(trained.config, field), field
    assert loaded.config.use_adapter
    # The prompt tokens came along too: re-embedding them gives the stored embeddings.
    torch.testing.assert_close(loaded.encode_prompts(), loaded.prompt_embeds)
    # What the loaded model scores with is what a save/reload of it scores with.
    loaded.save_pretrained(tmp_path / "merged")
    torch.testing.assert_close(scores(UniQAModel.from_pretrained(tmp_path / "merged")), scores(trained))


def test_load_onto_a_model_object_with_an_adapter_replaces_it(trained, tiny_model_factory, tmp_path):
    adapter_dir = save_adapter(trained, tmp_path / "adapter")
    other_head = tiny_model_factory(seed=0, prompt_groups="default")  # same backbone, other head
    other_head.clip.load_state_dict(trained.clip.state_dict())
    assert not torch.allclose(scores(other_head), scores(trained))
    loaded = load_adapter(other_head, adapter_dir)
    assert loaded is other_head
    torch.testing.assert_close(scores(loaded), scores(trained))
    assert not os.path.exists(os.path.join(adapter_dir, "README.md"))


def test_other_backbone_is_refused_with_both_digests(trained, tiny_model_factory, base_dir, tmp_path):
    adapter_dir = save_adapter(trained, tmp_path / "adapter", base_name=base_dir)
    # Same name, different weights: the digest decides, not the name.
    impostor = UniQAModel.from_pretrained(base_dir)
    with torch.no_grad():
        impostor.clip.visual_projection.weight[0, 0] += 1e-3
    expected, actual = backbone_digest(trained.clip), backbone_digest(impostor.clip)
    with pytest.raises(AdapterMismatchError) as error:
        load_adapter(impostor, adapter_dir)
    assert expected in str(error.value) and actual in str(error.value) and adapter_dir in str(error.value)
    assert impostor.adapter is None  # nothing was changed before the refusal
    with pytest.raises(AdapterMismatchError):
        load_adapter(tiny_model_factory(seed=1, use_adapter=False), adapter_dir)


def test_digest_is_stable_and_dtype_independent(trained, base_dir, tmp_path):
    state = trained.clip.state_dict()
    shuffled = dict(reversed(list(state.items())))
    assert backbone_digest(state) == backbone_digest(shuffled) == backbone_digest(trained.clip)
    # One base loaded in float32 or bfloat16 is one backbone (e.g. `uniqa score --dtype bfloat16`).
    bf16_base = UniQAModel.from_pretrained(base_dir, dtype=torch.bfloat16)
    assert bf16_base.clip.visual_projection.weight.dtype == torch.bfloat16
    assert backbone_digest(bf16_base.clip) == backbone_digest(state)
    adapter_dir = save_adapter(trained, tmp_path / "adapter")
    loaded = load_adapter(bf16_base, adapter_dir)
    assert loaded.adapter.fc[0].weight.dtype == torch.bfloat16
    torch.testing.assert_close(scores(loaded, PIXELS.bfloat16()), scores(trained), atol=0.05, rtol=0)


def test_bad_directories(trained, tiny_model_factory, tmp_path):
    with pytest.raises(ValueError, match="no adapter"):
        save_adapter(tiny_model_factory(use_adapter=False), tmp_path / "zero")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=f"empty: not a UniQA adapter directory .*{ADAPTER_CONFIG_NAME}"):
        load_adapter(trained, str(tmp_path / "empty"))
    adapter_dir = save_adapter(trained, tmp_path / "adapter")
    (tmp_path / "adapter" / ADAPTER_CONFIG_NAME).write_text("{not json")
    with pytest.raises(ValueError, match=f"{ADAPTER_CONFIG_NAME}: not a readable JSON file"):
        load_adapter(trained, adapter_dir)
    save_adapter(trained, adapter_dir)
    good = json.loads((tmp_path / "adapter" / ADAPTER_CONFIG_NAME).read_text())
    # A wrong view policy was set on the model and failed only while scoring; the others raised
    # a bare TypeError / AttributeError, or (a DMOS flag as a string) loaded as MOS.
    for change, message in [
        (lambda meta: meta["config"].update(view_policy="nope"), "Unknown view policy 'nope'"),
        (lambda meta: meta["config"].update(mos_higher_is_better="false"), "`mos_higher_is_better` must be true or false"),
        (lambda meta: meta.update(format_version="2"), "'format_version' must be a JSON integer"),
        (lambda meta: meta.update(base_model=["x"]), "'base_model' must be a JSON object"),
    ]:
        bad = json.loads(json.dumps(good))
        change(bad)
        (tmp_path / "adapter" / ADAPTER_CONFIG_NAME).write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=rf"{ADAPTER_CONFIG_NAME}: {message}"):
            load_adapter(trained, adapter_dir)
    save_adapter(trained, adapter_dir)
    os.remove(os.path.join(adapter_dir, ADAPTER_WEIGHTS_NAME))
    with pytest.raises(FileNotFoundError, match=ADAPTER_WEIGHTS_NAME):
        load_adapter(trained, adapter_dir)


def test_lora_in_the_same_directory_is_checked_and_merged(trained, base_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    base_digest = backbone_digest(trained.clip)
    peft_model = get_peft_model(trained, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # a "trained" LoRA: B is zero at init, which would make it a no-op
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    model = peft_model.base_model.model
    assert backbone_digest(model.clip) == base_digest  # LoRA layers hash as their base
    model.refresh_prompt_embeds()  # the LoRA moved the text tower too
    expected = scores(model)
    adapter_dir = save_adapter(model, tmp_path / "adapter", base_name=base_dir)
    head_only = scores(load_adapter(base_dir, adapter_dir))
    assert not torch.allclose(head_only, expected, atol=1e-4)  # so the LoRA matters below
    peft_model.save_pretrained(adapter_dir)

    loaded = load_adapter(base_dir, adapter_dir)
    assert isinstance(loaded, UniQAModel) and not any("lora_" in key for key in loaded.state_dict())
    torch.testing.assert_close(scores(loaded), expected)


def test_uniqa_score_with_an_adapter_on_a_base(trained, base_dir, tiny_model_factory, tmp_path):
    """`uniqa score --model BASE --adapter DIR` scores as the fine-tuned model does; an adapter of
    another backbone is refused before any image is read (exit 2)."""
    import csv

    from PIL import Image

    from modeling_uniqa.cli import main
    from tests.helpers import random_rgb

    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(3):
        Image.fromarray(random_rgb(40, 48, seed=index)).save(folder / f"p{index}.png")
    adapter_dir = save_adapter(trained, tmp_path / "adapter")
    trained.save_pretrained(tmp_path / "fine-tuned")
    options = ["--outputs", "score,mos", "--workers", "0", "--view-policy", "center"]

    def scored(*argv):
        output = tmp_path / f"{len(os.listdir(tmp_path))}.csv"
        assert main(["score", str(folder), "--output", str(output), *options, *argv]) == 0
        with open(output, newline="") as handle:
            return [(row["path"], float(row["score"]), float(row["mos"])) for row in csv.DictReader(handle)]

    with_adapter = scored("--model", base_dir, "--adapter", str(adapter_dir))
    reference = scored("--model", str(tmp_path / "fine-tuned"))
    assert [row[0] for row in with_adapter] == [row[0] for row in reference]
    for (_, score, mos), (_, expected_score, expected_mos) in zip(with_adapter, reference):
        assert score == pytest.approx(expected_score, abs=1e-6) and mos == pytest.approx(expected_mos, abs=1e-5)

    other = tiny_model_factory(seed=5, use_adapter=False)
    other.save_pretrained(tmp_path / "other-base")
    refused = tmp_path / "refused.csv"
    assert main(["score", str(folder), "--output", str(refused), *options, "--model", str(tmp_path / "other-base"), "--adapter", str(adapter_dir)]) == 2
    assert not refused.exists()


# Issue 23, finding 9: tampered artefacts are refused in one line naming the file.
class _Payload:
    def __reduce__(self):
        return (print, ("pickle code ran",))


def _plant_pickle(path):
    import pickle

    with open(path, "wb") as handle:
        pickle.dump({"weights": _Payload()}, handle)


def test_pickle_renamed_safetensors_adapter_is_one_line_naming_the_file(trained, base_dir, tmp_path, capsys, caplog):
    from PIL import Image

    from modeling_uniqa.cli import main
    from modeling_uniqa.errors import UnsafeFileError
    from tests.helpers import random_rgb

    adapter_dir = save_adapter(trained, tmp_path / "adapter", base_name=base_dir)
    weights = os.path.join(adapter_dir, "uniqa_adapter.safetensors")
    _plant_pickle(weights)
    with pytest.raises(UnsafeFileError, match="uniqa_adapter.safetensors: not a valid safetensors file"):
        load_adapter(base_dir, adapter_dir)
    photo = tmp_path / "p.png"
    Image.fromarray(random_rgb(40, 48)).save(photo)
    for argv in (["score", str(photo), "--model", base_dir, "--adapter", adapter_dir, "--output", str(tmp_path / "s.csv")],
                 ["heads", "add", base_dir, "--from", adapter_dir, "--name", "x"]):
        caplog.clear()
        assert main(argv) == 2
        captured = capsys.readouterr()
        assert "uniqa_adapter.safetensors: not a valid safetensors file" in captured.err + caplog.text
        assert "Traceback" not in captured.err and "weights_only" not in captured.err
        assert "pickle code ran" not in captured.out


def test_pickled_peft_adapter_bin_is_refused_naming_the_file(trained, base_dir, tmp_path, capsys):
    from modeling_uniqa.errors import UnsafeFileError

    adapter_dir = save_adapter(trained, tmp_path / "adapter", base_name=base_dir)
    with open(os.path.join(adapter_dir, "adapter_config.json"), "w") as handle:
        json.dump({"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"]}, handle)
    _plant_pickle(os.path.join(adapter_dir, "adapter_model.bin"))
    with pytest.raises(UnsafeFileError, match="adapter_model.bin: not a valid LoRA weights file") as caught:
        load_adapter(base_dir, adapter_dir)
    assert "weights_only" not in str(caught.value)
    assert "pickle code ran" not in capsys.readouterr().out


def test_save_adapter_writes_no_card_and_write_card_is_deprecated(trained, tmp_path):
    """Issue #25: library code never writes a model card as a side effect; `write_card` goes
    away in the next release (False: a FutureWarning; True: refused before anything is saved)."""
    with pytest.warns(FutureWarning, match="drop the argument"):
        adapter_dir = save_adapter(trained, tmp_path / "adapter", write_card=False)
    assert not os.path.exists(os.path.join(adapter_dir, "README.md"))
    with pytest.raises(TypeError, match="model_cards.write_model_card"):
        save_adapter(trained, tmp_path / "other", write_card=True)
    assert not os.path.exists(tmp_path / "other")
