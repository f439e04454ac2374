import json
import math

from tests.data_fixtures import write_kadid
from tests.helpers import build_tiny_tokenizer, save_tiny_uniqa
from train_scripts import demo_report


def test_report_ranks_the_held_out_images_beside_an_untrained_model(tmp_path, capsys):
    data_dir = str(tmp_path / "kadid")
    write_kadid(data_dir, n_refs=5, n_dist=2, levels=3)
    model = save_tiny_uniqa(str(tmp_path / "model"), build_tiny_tokenizer())
    output = tmp_path / "report.json"
    summary = demo_report.main(demo_report.parse_args(["--model", model, "--dataset", "kadid10k", "--data_dir", data_dir, "--output", str(output)]))
    printed = capsys.readouterr().out
    assert math.isfinite(summary["srcc"]) and math.isfinite(summary["untrained_srcc"])
    assert "untrained model (same architecture, random weights): SRCC=" in printed
    assert printed.strip().splitlines()[-1].startswith("demo: SRCC=")
    saved = json.loads(output.read_text())
    assert saved["num_images"] == len(saved["ranking"]) > 0
    # the baseline is seeded: the same figure twice
    again = demo_report.main(demo_report.parse_args(["--model", model, "--dataset", "kadid10k", "--data_dir", data_dir]))
    assert again["untrained_srcc"] == summary["untrained_srcc"]
