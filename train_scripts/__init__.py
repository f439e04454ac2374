"""UniQA's training jobs, one script per job, each runnable with `python` or `accelerate launch`.

`generate_captions.py` (step 1), `purify_captions.py` (step 2), `train_pretrain.py` (step 3),
`train_adapter.py` and `evaluate.py` (step 4). The pieces two scripts share live once in
`train_scripts/common/`.
"""
