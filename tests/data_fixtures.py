"""Writers of tiny copies of the IQA/IAA datasets and caption corpora, in the real formats.

Each ``write_<dataset>(root)`` creates the label files as distributed (``.mat`` through
scipy, ``.xlsx`` through openpyxl, CSV, text, JSON) and small images, and returns a dict
describing what it wrote (names, MOS, expected counts) for the tests to check against.
"""

from __future__ import annotations

import csv
import json
import os
import zlib
from collections.abc import Iterable

import numpy as np

__all__ = [
    "make_image",
    "write_koniq",
    "write_spaq",
    "write_clive",
    "write_live",
    "write_csiq",
    "write_tid2013",
    "write_kadid",
    "write_flive",
    "write_agiqa",
    "write_folder_csv",
    "write_ava",
    "write_aadb",
    "write_baid",
    "write_ava_captions",
    "write_ava_comments",
    "write_uniqa_corpus",
    "write_caption_jsonl",
    "write_llava",
]


def make_image(path: str, size: int = 8) -> str:
    """A small image whose format follows the extension (jpg, png, bmp)."""
    from PIL import Image

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    seed = zlib.crc32(os.path.basename(path).lower().encode())
    colour = (seed & 255, (seed >> 8) & 255, (seed >> 16) & 255)
    Image.new("RGB", (size, size), colour).save(path)
    return path


def _images(folder: str, names: Iterable[str]) -> None:
    for name in names:
        make_image(os.path.join(folder, name))


def _write_csv(path: str, header: list[str], rows: Iterable[Iterable]) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _write_lines(path: str, lines: Iterable[str]) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def _cell_array(strings: list[str], column: bool = False) -> np.ndarray:
    cells = np.empty((len(strings), 1) if column else (1, len(strings)), dtype=object)
    for i, s in enumerate(strings):
        cells.flat[i] = s
    return cells


def _mos(n: int, low: float, high: float, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    return [round(float(v), 4) for v in rng.uniform(low, high, n)]


# ---------------------------------------------------------------------------- IQA
def write_koniq(root: str, n: int = 20, sets: bool = True, scores: bool = True, folder: str = "512x384") -> dict:
    names = [f"{1000 + i}.jpg" for i in range(n)]
    mos = _mos(n, 5, 95)
    set_names = ["training"] * (n - 8) + ["validation"] * 3 + ["test"] * 5
    counts = [[(i + k) % 7 + 1 for k in range(5)] for i in range(n)]
    # SD is the vote standard deviation on the 1-5 scale in both files (not in MOS_zscore units)
    sd_sets = [round(0.4 + 0.05 * (i % 9), 4) for i in range(n)]
    sd_scores = [round(0.45 + 0.03 * (i % 7), 4) for i in range(n)]
    if sets:
        _write_csv(
            os.path.join(root, "koniq10k_distributions_sets.csv"),
            ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "set"],
            [
                [name] + [round(c / sum(cs), 4) for c in cs] + [sum(cs), m, sd, s]
                for name, cs, m, sd, s in zip(names, counts, mos, sd_sets, set_names)
            ],
        )
    if scores:
        _write_csv(
            os.path.join(root, "koniq10k_scores_and_distributions.csv"),
            ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "MOS_zscore"],
            [[name] + cs + [sum(cs), round(1 + m / 25, 3), sd, m] for name, cs, m, sd in zip(names, counts, mos, sd_scores)],
        )
    _images(os.path.join(root, folder), names)
    return {"names": names, "mos": mos, "sets": dict(zip(names, set_names)), "counts": counts,
            "sd_sets": dict(zip(names, sd_sets)), "sd_scores": dict(zip(names, sd_scores))}


def write_spaq(root: str, n: int = 15) -> dict:
    import openpyxl

    names = [f"{i:05d}.jpg" for i in range(1, n + 1)]
    mos = _mos(n, 0, 100, seed=1)
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["Image name", "MOS", "Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness"])
    for name, m in zip(names, mos):
        sheet.append([name, m, 50.0, 51.5, 52.0, 53.0, 54.0])
    os.makedirs(os.path.join(root, "Annotations"), exist_ok=True)
    workbook.save(os.path.join(root, "Annotations", "MOS and Image attribute scores.xlsx"))
    _images(os.path.join(root, "TestImage"), names)
    return {"names": names, "mos": mos}


def write_clive(root: str, n: int = 20) -> dict:
    import scipy.io

    training = [f"t{i}.bmp" for i in range(1, 8)]
    names = [f"{10 + i}.bmp" for i in range(n)]
    mos = _mos(n + 7, 3, 92, seed=2)
    data = os.path.join(root, "Data")
    os.makedirs(data, exist_ok=True)
    scipy.io.savemat(os.path.join(data, "AllImages_release.mat"), {"AllImages_release": _cell_array(training + names, True)})
    scipy.io.savemat(os.path.join(data, "AllMOS_release.mat"), {"AllMOS_release": np.array([mos])})
    scipy.io.savemat(os.path.join(data, "AllStdDev_release.mat"), {"AllStdDev_release": np.full((1, n + 7), 12.0)})
    _images(os.path.join(root, "Images"), names)
    _images(os.path.join(root, "Images", "trainingImages"), training)
    return {"names": names, "mos": mos[7:]}


LIVE_FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))


def write_live(root: str, realigned: bool = True, n_refs: int = 6) -> dict:
    """All 982 entries (the layout is fixed); every 5th entry is a reference copy."""
    import scipy.io

    refs = [f"ref{r}.bmp" for r in range(n_refs)]
    names, refnames, orgs = [], [], []
    for folder, count in LIVE_FOLDERS:
        lines = []
        for k in range(1, count + 1):
            i = len(names)
            names.append(f"{folder}/img{k}.bmp")
            refnames.append(refs[i % n_refs])
            orgs.append(1 if i % 5 == 0 else 0)
            lines.append(f"{refs[i % n_refs]} img{k}.bmp {0.5 * k:.2f}")
        _write_lines(os.path.join(root, folder, "info.txt"), lines)
    dmos = [0.0 if o else v for o, v in zip(orgs, _mos(len(names), 10, 95, seed=3))]
    if realigned:
        payload = {"dmos_new": np.array([dmos]), "orgs": np.array([orgs], dtype=float), "dmos_std": np.full((1, len(names)), 7.0)}
        scipy.io.savemat(os.path.join(root, "dmos_realigned.mat"), payload)
    else:
        scipy.io.savemat(os.path.join(root, "dmos.mat"), {"dmos": np.array([dmos]), "orgs": np.array([orgs], dtype=float)})
    scipy.io.savemat(os.path.join(root, "refnames_all.mat"), {"refnames_all": _cell_array(refnames)})
    distorted = [n for n, o in zip(names, orgs) if not o]
    _images(root, distorted)
    _images(os.path.join(root, "refimgs"), refs)
    return {"names": distorted, "refs": refs, "dmos": {n: d for n, d, o in zip(names, dmos, orgs) if not o}}


CSIQ_TYPES = (("noise", "awgn", "AWGN"), ("jpeg", "jpeg", "JPEG"), ("jpeg 2000", "jpeg2000", "jpeg2000"),
              ("fnoise", "fnoise", "fnoise"), ("blur", "blur", "BLUR"), ("contrast", "contrast", "contrast"))


def write_csiq(root: str, refs=(1600, "bridge", "cactus", "child_swimming", "fisher"), levels: int = 2,
               label_txt: bool = False) -> dict:
    """Header on row 4 from column D, sheet ``all_by_image``; one folder's files in upper case."""
    import openpyxl

    rows, names = [], []
    dmos_values = iter(_mos(len(refs) * len(CSIQ_TYPES) * levels, 0.0, 0.9, seed=4))
    for ref in refs:
        for idx, (dst_type, folder, token) in enumerate(CSIQ_TYPES, start=1):
            for lev in range(1, levels + 1):
                name = f"{folder}/{ref}.{token}.{lev}.png"
                on_disk = name.upper().replace(".PNG", ".png") if folder == "blur" else name
                make_image(os.path.join(root, "dst_imgs", on_disk))
                names.append(name)
                rows.append([ref, idx, dst_type, lev, 0.05, next(dmos_values)])
    if label_txt:
        _write_lines(
            os.path.join(root, "csiq_label.txt"), [f"{os.path.basename(n)} {r[5]}" for n, r in zip(names, rows)]
        )
    else:
        workbook = openpyxl.Workbook()
        workbook.active.title = "notes"
        sheet = workbook.create_sheet("all_by_image")
        sheet["A1"] = "CSIQ DMOS, all by image"
        for j, head in enumerate(["image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"]):
            sheet.cell(row=4, column=4 + j, value=head)
        for i, row in enumerate(rows):
            for j, value in enumerate(row):
                sheet.cell(row=5 + i, column=4 + j, value=value)
        workbook.save(os.path.join(root, "csiq.DMOS.xlsx"))
    for ref in refs:
        make_image(os.path.join(root, "src_imgs", f"{ref}.png"))
    return {"names": names, "refs": [str(r) for r in refs], "dmos": [r[5] for r in rows]}


def _synthetic_grid(n_refs: int, n_dist: int, levels: int, pattern: str, low: float, high: float, seed: int):
    """``(reference number, file name, mos)`` for every reference x distortion x level."""
    mos = iter(_mos(n_refs * n_dist * levels, low, high, seed=seed))
    for r in range(1, n_refs + 1):
        for d in range(1, n_dist + 1):
            for lev in range(1, levels + 1):
                yield r, pattern.format(r=r, d=d, lev=lev), next(mos)


def write_tid2013(root: str, n_refs: int = 5, n_dist: int = 3, levels: int = 2, upper_bmp: bool = False) -> dict:
    """Names upper case in the list (``I01_01_1.bmp``), lower case on disk.

    With ``upper_bmp`` the last reference's names end in ``.BMP`` in the list (as in the
    release) and on disk its first distortion is ``I05_01_1.BMP`` while the list says
    ``.BMP`` for a lower-case ``.bmp`` file elsewhere.
    """
    grid = list(_synthetic_grid(n_refs, n_dist, levels, "I{r:02d}_{d:02d}_{lev}.bmp", 0.3, 7.2, seed=5))
    if upper_bmp:
        grid = [(r, name[:-4] + ".BMP" if r == n_refs else name, mos) for r, name, mos in grid]
    lines = [f"{mos:.5f} {name}" for _, name, mos in grid]
    disk = [name if upper_bmp and r == n_refs and name[4:6] == "01" else name.lower() for r, name, _ in grid]
    _images(os.path.join(root, "distorted_images"), disk)
    _write_lines(os.path.join(root, "mos_with_names.txt"), lines)
    _write_lines(os.path.join(root, "mos_std.txt"), ["0.75"] * len(grid))
    _images(os.path.join(root, "reference_images"), [f"I{r:02d}.BMP" for r in range(1, n_refs + 1)])
    return {"names": [name for _, name, _ in grid], "mos": [float(line.split()[0]) for line in lines]}


def write_kadid(root: str, n_refs: int = 5, n_dist: int = 2, levels: int = 3) -> dict:
    grid = list(_synthetic_grid(n_refs, n_dist, levels, "I{r:02d}_{d:02d}_{lev:02d}.png", 1.1, 4.9, seed=6))
    # 'var' holds standard deviations such as sqrt(f(1-f)) of two-level vote splits: 0.3, 0.5, 0.4
    stds = (0.3, 0.5, 0.4, 0.458)
    rows = [[name, f"I{r:02d}.png", mos, stds[i % 4]] for i, (r, name, mos) in enumerate(grid)]
    _write_csv(os.path.join(root, "dmos.csv"), ["dist_img", "ref_img", "dmos", "var"], rows)
    _images(os.path.join(root, "images"), [row[0] for row in rows] + [f"I{r:02d}.png" for r in range(1, n_refs + 1)])
    return {"names": [row[0] for row in rows], "mos": [row[2] for row in rows], "std": {row[0]: row[3] for row in rows}}


def write_flive(root: str, valid_file: str = "labels=640_padded.csv", ava_ids: list[int] | None = None) -> dict:
    """20 images; every third is an AVA copy ``voc_emotic_ava/AVA__<id>.jpg`` (ids from ``ava_ids``)."""
    folders = ["voc_emotic_ava", "blur_dataset", "EE371R"]
    ava = iter(ava_ids or range(100, 120))
    names = [f"voc_emotic_ava/AVA__{next(ava)}.jpg" if i % 3 == 0 else f"{folders[i % 3]}/img{100 + i}.jpg"
             for i in range(20)]
    mos = _mos(20, 20, 90, seed=7)
    database = os.path.join(root, "database")
    _write_csv(os.path.join(database, "labels_image.csv"), ["name", "mos"], zip(names, mos))
    test, valid = names[:4], names[4:8]
    _write_csv(os.path.join(database, "labels640.csv"), ["mos_image", "name_image", "mos_patch"],
               [[m, n, 1.0] for n, m in zip(test, mos)])
    _write_csv(os.path.join(database, valid_file), ["name_image", "is_valid"],
               [[n, "True"] for n in valid] + [[n, "False"] for n in names[8:]])
    _images(database, names)
    return {"names": names, "test": test, "validation": valid}


def write_agiqa(root: str, n: int = 15) -> dict:
    generators = ["sd1.5", "midjourney", "AttnGAN", "glide", "xl2.2", "DALLE2"]
    names = [f"{generators[i % 6]}_normal_{i:03d}.jpg" for i in range(n)]
    mos = _mos(n, 0.5, 4.5, seed=8)
    rows = [[name, f"a cat, on a mat, number {i}", "" if i % 2 else "beautiful", "", "" if i % 3 else "anime",
             m, 0.4, 3.0, 0.5] for i, (name, m) in enumerate(zip(names, mos))]
    header = ["name", "prompt", "adj1", "adj2", "style", "mos_quality", "std_quality", "mos_align", "std_align"]
    _write_csv(os.path.join(root, "data.csv"), header, rows)
    _images(root, names)
    return {"names": names, "mos": mos, "generators": [n.split("_")[0] for n in names]}


def write_folder_csv(root: str, n: int = 20, reference: bool = False) -> dict:
    names = [f"uw_{i:03d}.png" for i in range(n)]
    mos = _mos(n, 1, 10, seed=9)
    header = ["file_name", "MOS"] + (["ref"] if reference else [])
    rows = [[name, m] + ([f"r{i % 4}"] if reference else []) for i, (name, m) in enumerate(zip(names, mos))]
    _write_csv(os.path.join(root, "labels.csv"), header, rows)
    _images(os.path.join(root, "images"), names)
    return {"names": names, "mos": mos}


# ---------------------------------------------------------------------------- IAA
def write_ava(root: str, n: int = 30, missing: int = 1, corrupt: int = 1, n_test: int = 6) -> dict:
    """AVA.txt lines; the last ``missing`` images are absent, the ones before them corrupt."""
    ids = [953619 + 7 * i for i in range(n)]
    lines = []
    for i, image_id in enumerate(ids):
        votes = [(i * (k + 3)) % 11 + (1 if k == 4 else 0) for k in range(10)]
        lines.append(" ".join(map(str, [i + 1, image_id, *votes, (i % 3) + 1, 0 if i % 2 else 2, 1396 + i % 2])))
    _write_lines(os.path.join(root, "AVA.txt"), lines)
    _write_lines(os.path.join(root, "tags.txt"), ["1 Abstract", "2 Still Life", "3 Animals"])
    _write_lines(os.path.join(root, "challenges.txt"), ["1396 Shadows", "1397 Red"])
    test = ids[:n_test]
    _write_lines(os.path.join(root, "aesthetics_image_lists", "generic_test.jpgl"), map(str, test))
    folder = os.path.join(root, "images")
    present = ids[: n - missing]
    _images(folder, [f"{i}.jpg" for i in present[: len(present) - corrupt]])
    for image_id in present[len(present) - corrupt:]:
        with open(os.path.join(folder, f"{image_id}.jpg"), "wb") as handle:
            handle.write(b"not a jpeg")
    return {"ids": ids, "test": test, "lines": lines, "missing": ids[n - missing:],
            "corrupt": present[len(present) - corrupt:]}


def write_aadb(root: str, test_attributes: str = "Test") -> dict:
    """Score files Train/Validation/TestNew; the test attribute files named ``test_attributes``."""
    parts = {"Train": 12, "Validation": 4, "TestNew": 6}
    labels = os.path.join(root, "imgListFiles_label")
    names: dict[str, list[str]] = {}
    start = 0
    for part, count in parts.items():
        names[part] = [f"farm1_{start + i}_{part.lower()}.jpg" for i in range(count)]
        start += count
        scores = _mos(count, 0, 1, seed=count)
        _write_lines(os.path.join(labels, f"imgList{part}Regression_score.txt"),
                     [f"{n} {s}" for n, s in zip(names[part], scores)])
        _images(os.path.join(root, "datasetImages_originalSize"), names[part])
    for part in ("Train", "Validation", test_attributes):
        source = names["TestNew" if part == test_attributes else part]
        _write_lines(os.path.join(labels, f"imgList{part}Regression_BalacingElements.txt"), [f"{n} 0.2" for n in source])
        _write_lines(os.path.join(labels, f"imgList{part}Regression_ColorHarmony.txt"), [f"{n} -0.4" for n in source[:-1]])
    return {"train": names["Train"], "validation": names["Validation"], "test": names["TestNew"]}


def write_baid(root: str, label_folder: str = "") -> dict:
    """The three CSVs in ``root/label_folder`` (the release has them in ``dataset/``), images in ``images/``."""
    splits = {"train_set.csv": range(0, 12), "val_set.csv": range(12, 15), "test_set.csv": range(15, 20)}
    names = {}
    for file_name, ids in splits.items():
        rows = [[f"{i}.jpg", round(2 + (i * 37 % 60) / 10, 2)] for i in ids]
        _write_csv(os.path.join(root, label_folder, file_name), ["image", "score"], rows)
        names[file_name] = [r[0] for r in rows]
        _images(os.path.join(root, "images"), names[file_name])
    return {"train": names["train_set.csv"], "validation": names["val_set.csv"], "test": names["test_set.csv"]}


# ------------------------------------------------------------------------- corpora
def write_ava_captions(path: str, ids: list[int], per_image: int = 3) -> str:
    images = [
        {
            "filename": f"{image_id}.jpg",
            "imgid": i,
            "split": "train" if i % 4 else "test",
            "sentences": [
                {"raw": f"Comment {k} on {image_id}, nice light.", "clean": "x", "tokens": ["x"], "imgid": i}
                for k in range(per_image)
            ]
            + [{"raw": "   "}],
        }
        for i, image_id in enumerate(ids)
    ]
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"dataset": "AVA", "images": images}, handle)
    return path


def write_ava_comments(path: str, ids: list[int]) -> str:
    return _write_lines(path, [f"{i + 1}#{image_id}#Great shot!#Love the colours" for i, image_id in enumerate(ids)])


def write_uniqa_corpus(path: str, entries: list[dict]) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(entries, handle)
    return path


def write_caption_jsonl(path: str, records: list[dict]) -> str:
    return _write_lines(path, [json.dumps(r) for r in records])


def write_llava(folder: str, images: list[str]) -> dict:
    conversations = [
        {
            "id": str(i),
            "image": image,
            "conversations": [
                {"from": "human", "value": "<image>\nWhat you get is an image of good aesthetics. Evaluate image aesthetics."},
                {"from": "gpt", "value": f"The composition of {image} is balanced."},
            ],
        }
        for i, image in enumerate(images)
    ]
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "conversations.json"), "w", encoding="utf-8") as handle:
        json.dump(conversations, handle)
    outputs = [
        {"question_id": image, "prompt": "What you are given is a poor quality image. Evaluate image quality.",
         "text": f"{image} is noisy.", "answer_id": "x", "model_id": "llava", "metadata": {}}
        for image in images[:2]
    ]
    _write_lines(os.path.join(folder, "answers.jsonl"), [json.dumps(o) for o in outputs])
    return {"conversations": len(conversations), "outputs": len(outputs)}


# ------------------------------------------------------------------ test helpers
def quiet_datasets() -> None:
    """Silence the ``datasets`` progress bars in test output."""
    import datasets

    datasets.disable_progress_bars()


def build(name: str, root: str, tmp_path, **options):
    """``data_builders.load`` with the cache inside the test's temporary folder."""
    import data_builders

    options.setdefault("cache_dir", os.path.join(str(tmp_path), "cache"))
    return data_builders.load(name, root, **options)


def split_names(dataset_dict) -> dict[str, list[str]]:
    """``{split: [image_name, ...]}`` of a DatasetDict."""
    return {split: list(part["image_name"]) for split, part in dataset_dict.items()}


def assert_disjoint(dataset_dict, column: str = "image_name") -> None:
    """No value of ``column`` is in two splits (``reference`` for content-disjointness)."""
    owner: dict[str, str] = {}
    for split, part in dataset_dict.items():
        for value in set(part[column]):
            assert value not in owner, f"{column} {value!r} is in both {owner[value]!r} and {split!r}"
            owner[value] = split


def assert_scores(dataset_dict, mos_range, higher_is_better: bool) -> None:
    """Scores lie in [0, 1], follow the MOS (flipped for DMOS) and match the formula."""
    mos = np.concatenate([np.asarray(list(part["mos"]), float) for part in dataset_dict.values()])
    score = np.concatenate([np.asarray(list(part["score"]), float) for part in dataset_dict.values()])
    assert score.min() >= 0.0 and score.max() <= 1.0
    low, high = mos_range
    expected = (mos - low) / (high - low)
    expected = np.clip(expected if higher_is_better else 1.0 - expected, 0.0, 1.0)
    np.testing.assert_allclose(score, expected, rtol=1e-9, atol=1e-12)
    if len(set(mos)) > 1:
        sign = np.sign(np.corrcoef(mos, score)[0, 1])
        assert sign == (1.0 if higher_is_better else -1.0)
