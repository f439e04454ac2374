"""Issue 24 item 7: one convention for the boolean flags of every script under train_scripts/
(`--name` on, `--no_name` off, `--no-name` accepted too), and every flag the README documents for
a script is one that script accepts."""

import argparse
import dataclasses
import importlib
import os
import pathlib
import re

import pytest

from train_scripts.common.dataset_options import DATASET_OPTION
from train_scripts.common.flags import ArgumentParser

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = sorted(path.stem for path in (ROOT / "train_scripts").glob("*.py") if "def parse_args" in path.read_text(encoding="utf-8"))


class _Captured(Exception):
    pass


def script_parser(name: str, monkeypatch) -> argparse.ArgumentParser:
    """The parser `train_scripts/<name>.py`'s `parse_args` builds, caught before it parses."""
    module = importlib.import_module(f"train_scripts.{name}")

    def capture(self, *args, **kwargs):
        raise _Captured(self)

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", capture)
        patch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
        with pytest.raises(_Captured) as caught:
            module.parse_args([])
    return caught.value.args[0]


def test_every_script_is_found():
    assert {"train_adapter", "train_pretrain", "evaluate", "evaluate_distortions", "generate_captions", "purify_captions", "make_quality_corpus",
            "make_demo_data", "demo_report", "make_small_clip"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_boolean_flags_follow_one_convention(name, monkeypatch):
    parser = script_parser(name, monkeypatch)
    booleans = [action for action in parser._actions if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction)]
    for dest in {action.dest for action in booleans}:
        spellings = {option for action in booleans if action.dest == dest for option in action.option_strings}
        assert {f"--{dest}", f"--no_{dest}", f"--no-{dest}"} <= spellings, f"{name}: --{dest} breaks the flag convention ({sorted(spellings)})"
        on = next(action for action in booleans if f"--{dest}" in action.option_strings)
        off = next(action for action in booleans if f"--no_{dest}" in action.option_strings)
        assert on.default == off.default, f"{name}: --{dest} and --no_{dest} disagree on the default"


def _documented_commands() -> list:
    """(script, flags) of every `train_scripts/<script>.py` command in the README (continued lines joined)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8").replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        for match in re.finditer(r"train_scripts/(\w+)\.py\b(.*?)(?=train_scripts/\w+\.py|$)", line):
            flags = re.findall(r"(?<![\w`-])(--[A-Za-z][\w-]*)", match.group(2))
            if flags and match.group(1) in SCRIPTS:
                commands.append((match.group(1), flags))
    return commands


def test_readme_commands_use_flags_their_scripts_accept(monkeypatch):
    commands = _documented_commands()
    assert any(script == "train_adapter" for script, _ in commands)
    for script, flags in commands:
        known = set(script_parser(script, monkeypatch)._option_string_actions)
        unknown = [flag for flag in flags if flag not in known]
        assert not unknown, f"README documents {unknown} for train_scripts/{script}.py, which does not accept them"


# The required flags of each script: the shortest command line it parses.
REQUIRED = {
    "train_adapter": ["--model", "m", "--dataset", "live", "--data_dir", "d", "--output_dir", "o"],
    "evaluate": ["--model", "m", "--dataset", "live", "--data_dir", "d", "--output_dir", "o"],
    "evaluate_distortions": ["--model", "m", "--data_dir", "d", "--output_dir", "o"],
    "generate_captions": ["--dataset", "kadid10k", "--data_dir", "d", "--task", "quality", "--output", "o.jsonl"],
    "purify_captions": ["--data_dir", "d", "--clip_aes", "c", "--output", "o.jsonl"],
    "make_quality_corpus": ["--output_dir", "o"],
    "make_demo_data": ["--output_dir", "o"],
    "demo_report": ["--model", "m", "--dataset", "kadid10k", "--data_dir", "d"],
}


@pytest.mark.parametrize(("script", "flag", "dest", "expected"), [
    ("train_adapter", "--no_feature_bank", "feature_bank", False),
    ("train_adapter", "--no-feature_bank", "feature_bank", False),
    ("evaluate", "--no_logistic", "logistic", False),
    ("evaluate_distortions", "--brisque", "brisque", True),
    ("evaluate_distortions", "--no_brisque", "brisque", False),
    ("evaluate_distortions", "--no-brisque", "brisque", False),
    ("evaluate_distortions", "--card", "card", True),
    ("evaluate_distortions", "--no_card", "card", False),
    ("generate_captions", "--resume", "resume", True),
    ("generate_captions", "--no_resume", "resume", False),
    ("generate_captions", "--no-resume", "resume", False),
    ("generate_captions", "--overwrite", "overwrite", True),
    ("generate_captions", "--no-overwrite", "overwrite", False),
    ("purify_captions", "--resume", "resume", True),
    ("purify_captions", "--no_resume", "resume", False),
    ("purify_captions", "--overwrite", "overwrite", True),
    ("purify_captions", "--no_overwrite", "overwrite", False),
])
def test_documented_spellings_parse(script, flag, dest, expected):
    module = importlib.import_module(f"train_scripts.{script}")
    assert getattr(module.parse_args([*REQUIRED[script], flag]), dest) is expected


# What each script's argparse parser gave before its options became dataclass fields (issue 25):
# the conversion keeps every default.
OLD_DEFAULTS = {
    "generate_captions": {
        "dataset": "kadid10k", "data_dir": "d", "split": "train", "image_dir": None, "cache_dir": None, "dataset_option": [], "task": "quality",
        "captioner": "template", "output": "o.jsonl", "captions_per_image": 3, "levels": "quintile", "prompt_file": None, "batch_size": 8,
        "max_new_tokens": 128, "temperature": 0.7, "top_p": 0.9, "top_k": 0, "dtype": "auto", "seed": 0, "max_images": None, "num_workers": 2,
        "resume": False, "overwrite": False},
    "purify_captions": {
        "data_dir": "d", "image_dir": None, "cache_dir": None, "clip_aes": "c", "tokenizer": None, "output": "o.jsonl", "top_k": 4, "alpha": 1.0,
        "beta": 1.0, "informativeness": "length", "min_captions": 3, "image_batch_size": 64, "text_batch_size": 256, "dtype": "auto",
        "num_workers": 2, "max_images": None, "resume": False, "overwrite": False},
    "evaluate_distortions": {
        "model": "m", "data_dir": "d", "output_dir": "o", "dataset_name": "held-out sources", "batch_size": 32, "brisque": True, "card": False,
        "card_license": None, "card_sources": None, "card_recipe": "make uniqa-tiny", "started_at": None},
    "make_quality_corpus": {
        "output_dir": "o", "cache_dir": os.path.join(os.path.expanduser("~"), ".cache", "uniqa-photos"),
        "heldout_sources": ["mate-backgrounds", "lomiri-wallpapers-20.04", "scikit-image"],
        "codes": ["01", "02", "03", "09", "10", "11", "13", "14", "16", "17", "21", "22", "24", "25"], "short_side": (224, 416),
        "train_short_sides": [(224, 416)], "jitter": 0.4, "gmsd_exponent": 1.0, "vary_implementation": False, "max_photos": None, "workers": min(2, os.cpu_count() or 1), "seed": 0},
    "make_demo_data": {"output_dir": "o", "seed": 0, "size": 96, "references": 11, "clip_output": None, "clip_image_size": 64},
    "demo_report": {
        "model": "m", "dataset": "kadid10k", "data_dir": "d", "cache_dir": None, "dataset_option": [], "split_index": 0, "split_seed": 123,
        "batch_size": 16, "show": 5, "output": None, "baseline_seed": 0},
}


@pytest.mark.parametrize("script", sorted(OLD_DEFAULTS))
def test_converted_scripts_keep_their_defaults(script):
    args = importlib.import_module(f"train_scripts.{script}").parse_args(REQUIRED[script])
    assert dataclasses.asdict(args) == OLD_DEFAULTS[script]


@pytest.mark.parametrize(("script", "argv", "message"), [
    ("generate_captions", ["--output", "o.csv"], "--output must be a .jsonl file, got o.csv"),
    ("generate_captions", ["--batch_size", "0"], "--batch_size must be >= 1, got 0"),
    ("generate_captions", ["--num_workers", "-1"], "--num_workers must be >= 0"),
    ("generate_captions", ["--task", "colour"], "invalid choice: 'colour'"),
    ("generate_captions", ["--captioner", "m", "--temperature", "0"], "--temperature 0 (greedy) would write 3 identical captions"),
    ("purify_captions", ["--alpha", "0", "--beta", "0"], "--alpha and --beta must be >= 0 and not both 0, got 0.0, 0.0"),
    ("purify_captions", ["--top_k", "0"], "--top_k must be >= 1, got 0"),
    ("purify_captions", ["--dtype", "float64"], "invalid choice: 'float64'"),
    ("purify_captions", ["--num_workers", "-2"], "--num_workers must be >= 0"),
    ("purify_captions", ["--output", "o.csv"], "--output must be a .jsonl file, got o.csv"),
    ("evaluate_distortions", ["--batch_size", "0"], "--batch_size must be >= 1"),
    ("evaluate_distortions", ["--brisque", "true"], "unrecognized arguments: true"),
    ("make_quality_corpus", ["--short_side", "80", "64"], "--short_side needs 64 <= LOW <= HIGH, got 80 64"),
    ("make_quality_corpus", ["--jitter", "1.5"], "--jitter must be in [0, 1)"),
    ("make_quality_corpus", ["--train_short_sides", "200"], "expected LOW:HIGH"),
    ("make_quality_corpus", ["--codes", "99"], "invalid choice: '99'"),
    ("make_demo_data", ["--references", "1"], "--references must be between 2 and 11."),
    ("make_demo_data", ["--size", "8"], "--size must be at least 16 pixels."),
    ("demo_report", ["--batch_size", "many"], "invalid int value: 'many'"),
])
def test_converted_scripts_reject_bad_values_in_one_line(script, argv, message, capsys):
    module = importlib.import_module(f"train_scripts.{script}")
    with pytest.raises(SystemExit) as exit_info:
        module.parse_args([*REQUIRED[script], *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert message in err.strip().splitlines()[-1]


# ------------------------------------------------------------------------------------------------
# Options declared once, as dataclass fields (issue 25): `common.flags.ArgumentParser`
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SCRIPTS)
def test_no_boolean_takes_a_value(name, monkeypatch):
    """HfArgumentParser's own booleans (`--name true`, `--no_name` only when the default is true)
    never reach a script: every boolean is a flag of the one convention."""
    from transformers.hf_argparser import string_to_bool

    parser = script_parser(name, monkeypatch)
    assert not [action.option_strings for action in parser._actions if action.type is string_to_bool]


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_parses_dataclasses(name, monkeypatch):
    """No plain argparse left: each script's options are dataclass fields, parsed by `common.flags`."""
    parser = script_parser(name, monkeypatch)
    assert isinstance(parser, ArgumentParser) and all(dataclasses.is_dataclass(dtype) for dtype in parser.dataclass_types)


@dataclasses.dataclass
class _Group:
    _argument_group_name = "shared group"

    count: int = dataclasses.field(default=3, metadata={"help": "How many."})
    loud: bool = dataclasses.field(default=False, metadata={"help": "Speak up."})
    bank: bool | None = dataclasses.field(default=None, metadata={"help": "Decided later.", "off_help": "Never."})
    kind: str = dataclasses.field(default="a", metadata={"choices": ("a", "b"), "help": "Which kind."})


@dataclasses.dataclass(kw_only=True)
class _Script(_Group):
    output_dir: str = dataclasses.field(metadata={"help": "Where to write."})
    corpus: list[str] = dataclasses.field(metadata={"action": "append", "metavar": "NAME=DIR", "help": "Repeatable."})
    dataset_option: list[tuple] = dataclasses.field(default_factory=list, metadata=DATASET_OPTION)
    quiet: bool = dataclasses.field(default=True, metadata={"help": "Say little."})

    def __post_init__(self):
        if self.count < 1:
            raise ValueError("--count must be >= 1.")


def _parse(argv):
    return ArgumentParser(_Script, description="A test script.").parse(argv)


def test_dataclass_parser_keeps_the_conventions():
    base = ["--output_dir", "o", "--corpus", "a=1"]
    args = _parse([*base, "--corpus", "b=2", "--dataset_option", "mos_range=[1,10]", "--kind", "b"])
    assert args.corpus == ["a=1", "b=2"] and args.dataset_option == [("mos_range", [1, 10])] and args.kind == "b"
    assert (args.count, args.loud, args.bank, args.quiet) == (3, False, None, True)  # defaults written once, in the fields
    for on in ("--loud", "--no_loud", "--no-loud"):
        assert _parse([*base, on]).loud is (on == "--loud")
    for spelling, value in (("--bank", True), ("--no_bank", False), ("--no-bank", False), ("--no_quiet", False), ("--no-quiet", False)):
        assert getattr(_parse([*base, spelling]), spelling.lstrip("-").removeprefix("no_").removeprefix("no-")) is value
    assert _parse([*base, "--output-dir", "p"]).output_dir == "p"  # HfArgumentParser's dashed alias


@pytest.mark.parametrize(("argv", "message"), [
    (["--output_dir", "o"], "required: --corpus"),
    (["--output_dir", "o", "--corpus", "a", "--loud", "true"], "unrecognized arguments: true"),
    (["--output_dir", "o", "--corpus", "a", "--unknown"], "unrecognized arguments: --unknown"),
    (["--output_dir", "o", "--corpus", "a", "--kind", "c"], "invalid choice"),
    (["--output_dir", "o", "--corpus", "a", "--dataset_option", "nokey"], "expected KEY=VALUE"),
    (["--output_dir", "o", "--corpus", "a", "--count", "0"], "--count must be >= 1."),  # the dataclass's own check
])
def test_dataclass_parser_errors_are_argparse_one_liners(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parse(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in error


def test_dataclass_parser_help_shows_each_field(capsys):
    with pytest.raises(SystemExit):
        _parse(["--help"])
    text = capsys.readouterr().out
    for expected in ("A test script.", "shared group:", "How many. (default: 3)", "Speak up.", "Never.", "--no_bank, --no-bank", "Repeatable."):
        assert expected in text
