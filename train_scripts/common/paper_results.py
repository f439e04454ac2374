"""The UniQA paper's headline numbers (method.md section 5), written once.

Every value is `(srcc, plcc)` unless said otherwise. `evaluate.py` prints them beside ours.
Keys are `data_builders` names.
"""

# Table I (IQA), VIII (AGIQA-3K, UWIQA, ECIQAD) and III-V (IAA): adapter only, backbone frozen.
ADAPTER = {
    "live": (0.981, 0.983),
    "tid2013": (0.916, 0.931),
    "csiq": (0.963, 0.973),
    "kadid10k": (0.940, 0.943),
    "clive": (0.890, 0.905),
    "koniq10k": (0.933, 0.941),
    "spaq": (0.924, 0.928),
    "agiqa3k": (0.876, 0.917),
    "uwiqa": (0.847, 0.859),
    "eciqad": (0.873, 0.887),
    "ava": (0.776, 0.776),
    "aadb": (0.786, 0.787),
    "baid": (0.487, 0.528),
}

# The same tables' dagger rows: backbone unfrozen too ("full" mode).
FULL = {
    "live": (0.985, 0.985),
    "tid2013": (0.950, 0.959),
    "csiq": (0.977, 0.980),
    "kadid10k": (0.966, 0.968),
    "clive": (0.902, 0.914),
    "koniq10k": (0.940, 0.948),
    "spaq": (0.925, 0.929),
    "agiqa3k": (0.888, 0.922),
    "uwiqa": (0.876, 0.889),
    "eciqad": (0.918, 0.928),
    "ava": (0.782, 0.782),
    "aadb": (0.788, 0.791),
    "baid": (0.484, 0.502),
}

# Table VII: zero-shot SRCC, (single prompt, prompt ensemble).
ZERO_SHOT_SRCC = {
    "clive": (0.638, 0.790),
    "koniq10k": (0.667, 0.806),
    "agiqa3k": (0.744, 0.752),
}

# Table IX: few-label SRCC by number of training images, one prompt group ("Ours").
FEW_LABEL_SINGLE_SRCC = {
    "clive": {50: 0.813, 100: 0.836, 200: 0.850},
    "koniq10k": {50: 0.772, 100: 0.842, 200: 0.870},
    "live": {50: 0.962, 100: 0.956, 200: 0.974},
}

# Table IX: few-label SRCC with the prompt ensemble ("Ours*", the headline) by number of training images.
FEW_LABEL_SRCC = {
    "clive": {50: 0.828, 100: 0.849, 200: 0.853},
    "koniq10k": {50: 0.844, 100: 0.860, 200: 0.876},
    "live": {50: 0.963, 100: 0.958, 200: 0.976},
}

# Which table each dataset's fine-tuning result comes from (for the markdown caption).
TABLE_OF = {
    **dict.fromkeys(("live", "tid2013", "csiq", "kadid10k", "clive", "koniq10k", "spaq"), "Table I"),
    **dict.fromkeys(("agiqa3k", "uwiqa", "eciqad"), "Table VIII"),
    "ava": "Table III",
    "aadb": "Table IV",
    "baid": "Table V",
}


def fine_tuned(dataset: str, mode: str):
    """`(srcc, plcc)` the paper reports for `dataset` fine-tuned in `mode`, or `None`.

    `adapter` and `lora` compare with the adapter-only rows (the paper has no LoRA rows),
    `full` with the unfrozen-backbone rows.
    """
    table = FULL if mode == "full" else ADAPTER
    return table.get(dataset)


__all__ = ["ADAPTER", "FULL", "ZERO_SHOT_SRCC", "FEW_LABEL_SINGLE_SRCC", "FEW_LABEL_SRCC", "TABLE_OF", "fine_tuned"]
