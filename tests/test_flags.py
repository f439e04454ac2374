"""Issue 24 item 7: one convention for the boolean flags of every script under train_scripts/
(`--name` on, `--no_name` off, `--no-name` accepted too), and every flag the README documents for
a script is one that script accepts."""

import argparse
import importlib
import pathlib
import re

import pytest

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
    assert {"train_adapter", "train_pretrain", "evaluate", "evaluate_distortions", "generate_captions", "purify_captions"} <= set(SCRIPTS)


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


@pytest.mark.parametrize(("script", "base", "flag", "dest", "expected"), [
    ("train_adapter", ["--model", "m", "--dataset", "live", "--data_dir", "d", "--output_dir", "o"], "--no_feature_bank", "feature_bank", False),
    ("train_adapter", ["--model", "m", "--dataset", "live", "--data_dir", "d", "--output_dir", "o"], "--no-feature_bank", "feature_bank", False),
    ("evaluate", ["--model", "m", "--dataset", "live", "--data_dir", "d", "--output_dir", "o"], "--no_logistic", "logistic", False),
    ("evaluate_distortions", ["--model", "m", "--data_dir", "d", "--output_dir", "o"], "--brisque", "brisque", True),
    ("evaluate_distortions", ["--model", "m", "--data_dir", "d", "--output_dir", "o"], "--no_brisque", "brisque", False),
])
def test_documented_spellings_parse(script, base, flag, dest, expected):
    module = importlib.import_module(f"train_scripts.{script}")
    assert getattr(module.parse_args([*base, flag]), dest) is expected
