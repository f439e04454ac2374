"""benchmarks/hostile_sweep.py, issue #23's "done when": its cases cover every finding, its verdicts
can say NOT HELD, and one cheap case runs end to end as the sweep runs it."""

import os
import sys

import pytest

from tests.helpers import REPO_ROOT

sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))
import hostile_sweep  # noqa: E402


def test_the_cases_cover_every_finding_of_the_issue():
    names = [case.name for case in hostile_sweep.CASES]
    assert len(set(names)) == len(names) and len(names) >= 40
    assert {case.finding for case in hostile_sweep.CASES} == set(range(1, 12))
    for command in ("train_adapter", "train_pretrain", "evaluate", "generate_captions", "purify_captions", "uniqa_score", "uniqa_heads_add"):
        assert f"lock/{command}" in names  # finding 1: every command that writes an output
    for name in ("card/train_adapter", "card/uniqa_heads_add", "push/symlink_out", "push/readme_symlink_out", "push/truncated_weights",
                 "push/missing_shard", "push/secrets_env", "push/credentials_json", "push/hub_token", "push/clip_config_5",
                 "pickle/score_adapter_safetensors", "pickle/heads_add_from", "pickle/peft_adapter_bin", "pickle/checkpoint_resume",
                 "tar_links/uniqa_score", "retrieve/empty_query", "file_size_limit/train_adapter", "batch_too_large/train_pretrain"):
        assert name in names
    assert hostile_sweep.select(["push/*"]) == [case for case in hostile_sweep.CASES if case.name.startswith("push/")]


def test_a_refusal_holds_only_as_one_line_naming_the_file_with_exit_code_2(tmp_path):
    workspace = hostile_sweep.Workspace(str(tmp_path), timeout=1)

    def verdict(returncode, stderr, names=("labels.csv", "line 6")):
        run = hostile_sweep.Run(["python", "x.py"], returncode, "", stderr, 0.1)
        return hostile_sweep.refused(hostile_sweep.Outcome(), run, workspace, names)

    line = "2026-12-03 21:00:00,123 ERROR __main__: /data/labels.csv, line 6: 'nan' is not a finite number\n"
    held = verdict(2, "INFO x: loading\n" + line)
    assert held.held and held.message == "/data/labels.csv, line 6: 'nan' is not a finite number"
    assert verdict(2, "error: /data/labels.csv, line 6: bad\n").held  # `uniqa`'s own form
    assert verdict(2, "Loading weights\n/data/labels.csv, line 6: bad\n").held  # logged before logging was set up: bare
    assert "exit code 1, not 2" in verdict(1, line).problems
    assert "a traceback" in verdict(2, "Traceback (most recent call last):\n  ...\n" + line).problems
    assert "2 error lines, not one" in verdict(2, line + line).problems
    assert verdict(2, line, names=["im003.png"]).problems == ["the message does not name im003.png"]
    assert verdict(2, line, names=[("im003.png", "labels.csv")]).held  # one of several names
    usage = verdict(2, "usage: x.py [-h]\nx.py: error: unrecognized arguments: --nope\n", names=())
    assert not usage.held and any("argparse" in problem for problem in usage.problems)


@pytest.mark.slow
def test_the_empty_query_case_runs_end_to_end(tmp_path, capsys):
    """The cheapest case, through the real command line (`uniqa retrieve` in a fresh process)."""
    args = hostile_sweep.parse_args(["--cases", "retrieve/empty_query", "--workdir", str(tmp_path / "sweep")])
    assert hostile_sweep.main(args) == 0
    out = capsys.readouterr().out
    assert "| retrieve/empty_query |" in out and "| 2 | held | --query number 2 is empty" in out
    assert out.rstrip().splitlines()[-1].startswith("1 of 1 cases held")
    assert not os.path.exists(tmp_path / "sweep")  # removed without --keep
