"""A model folder saved before the package layout moved (commit 9146f8d, flat `modeling_uniqa/`)
loads and scores exactly as it did then: through the package (`uniqa score`'s scorer, the
pipeline, `uniqa score` itself), through its own remote-code copies in a process where the
package cannot be imported, and `uniqa push`'s byte-for-byte check of those copies passes.

`tests/data/saved-before-layout/` and its scores (`saved_before_layout_scores.json`) were made at
9146f8d by `make_tiny_uniqa(build_tiny_tokenizer(), seed=7)` + `save_pretrained`; the images are
`random_rgb(40 + 8 * i, 48, seed=i)`, i = 0..2.
"""

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
from transformers import pipeline

from modeling_uniqa.cli import main
from modeling_uniqa.scoring.image_scorer import ImageScorer
from tests.helpers import random_rgb

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
FOLDER = os.path.join(DATA, "saved-before-layout")
with open(os.path.join(DATA, "saved_before_layout_scores.json"), encoding="utf-8") as handle:
    EXPECTED = json.load(handle)


def images():
    return [Image.fromarray(random_rgb(40 + 8 * i, 48, seed=i)) for i in range(3)]


def test_the_scorer_gives_the_scores_of_before_the_move():
    rows = ImageScorer(FOLDER, view_policy="center", device="cpu", outputs=["score", "groups"]).score([f"img{i}" for i in range(3)], images())
    assert [row["error"] for row in rows] == [None] * 3
    for row, expected in zip(rows, EXPECTED["scorer_rows"]):
        assert row.keys() == expected.keys()
        np.testing.assert_allclose([row["score"], row["group_default"]], [expected["score"], expected["group_default"]], atol=1e-6, rtol=0)


def test_the_pipeline_gives_the_scores_of_before_the_move():
    scores = [result["score"] for result in pipeline("image-quality", model=FOLDER, device="cpu")(images())]
    np.testing.assert_allclose(scores, EXPECTED["pipeline_scores"], atol=1e-6, rtol=0)


def test_uniqa_score_gives_the_scores_of_before_the_move(tmp_path):
    paths = []
    for i, image in enumerate(images()):
        paths.append(str(tmp_path / f"img{i}.png"))
        image.save(paths[-1])
    output = tmp_path / "scores.jsonl"
    assert main(["score", *paths, "--model", FOLDER, "--view-policy", "center", "--output", str(output), "--workers", "0"]) == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    np.testing.assert_allclose([row["score"] for row in rows], [row["score"] for row in EXPECTED["scorer_rows"]], atol=1e-6, rtol=0)


def test_its_remote_code_scores_in_a_process_without_the_package(tmp_path):
    script = (
        "import json, sys\n"
        "sys.modules['modeling_uniqa'] = None\n"
        "from transformers import pipeline\n"
        "from PIL import Image\n"
        "paths = json.loads(sys.argv[2])\n"
        "scorer = pipeline(model=sys.argv[1], trust_remote_code=True, device='cpu')\n"
        "print(json.dumps({'module': type(scorer.model).__module__, 'scores': [r['score'] for r in scorer([Image.open(p) for p in paths])]}))\n"
    )
    paths = []
    for i, image in enumerate(images()):
        paths.append(str(tmp_path / f"img{i}.png"))
        image.save(paths[-1])
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    completed = subprocess.run([sys.executable, "-c", script, FOLDER, json.dumps(paths)], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["module"].startswith("transformers_modules."), result["module"]
    np.testing.assert_allclose(result["scores"], EXPECTED["pipeline_scores"], atol=1e-6, rtol=0)
