"""`UniQAScorer`: UniQA scores as a Ray Data stage (`pip install 'uniqa-hf[ray]'`).

    import ray
    from modeling_uniqa.scoring.ray_scorer import UniQAScorer

    ds = ray.data.read_parquet("s3://bucket/laion-parquet/")          # or read_images, read_webdataset
    ds = ds.map_batches(
        UniQAScorer, fn_constructor_kwargs={"model_dir": "/models/uniqa-ava", "image_column": "jpg"},
        concurrency=8, num_gpus=1, batch_size=256,
    )
    ds.filter(lambda row: row["score"] > 0.6).write_parquet("s3://bucket/filtered/")

Each actor loads the model once (on the GPU Ray gives it, else the CPU) and adds the score
columns (`column_prefix` + score, mos, group_*, error) to every batch, plus a
`uniqa_fingerprint` column (the sha256 of the scoring fingerprint, see
`score_parquet.fingerprint_id`): Ray's `write_parquet` keeps no schema metadata, so the rows
carry it and `score_parquet.read_scores` refuses files that mix scorers. Images may be arrays
(`read_images`), encoded bytes (`read_parquet` of img2dataset, `read_webdataset`),
`{"bytes", "path"}` dicts (`datasets` Image columns) or paths; one that cannot be decoded gets
empty scores and its reason in `error`. Ray itself is not imported here: the class is a plain
callable on a dict of columns (numpy) or a pandas DataFrame.
"""

from .image_scorer import ImageScorer
from .score_datasets import image_source
from .score_parquet import FINGERPRINT_COLUMN, fingerprint_id


class UniQAScorer:
    """A Ray Data `map_batches` class. Keyword arguments as `ImageScorer` (outputs, heads,
    adapter, view_policy, view_seed, dtype, device, prompts, tokenizer_dir, batch_size: views per
    forward, jpeg_draft)."""

    def __init__(self, model_dir: str, image_column: str = "image", column_prefix: str = "", key_column: str | None = None, **scorer_kwargs):
        self.image_column, self.column_prefix, self.key_column = image_column, column_prefix, key_column
        self.scorer = ImageScorer(model_dir, key_column=key_column or "row", **scorer_kwargs)
        self.fingerprint = self.scorer.fingerprint
        self.fingerprint_id = fingerprint_id(self.fingerprint)

    def __call__(self, batch):
        if self.image_column not in batch:
            raise KeyError(f"UniQAScorer: no column {self.image_column!r} in the batch (columns: {', '.join(map(str, batch.keys()))}).")
        images = list(batch[self.image_column])
        keys = [str(key) for key in batch[self.key_column]] if self.key_column else [f"{self.image_column}[{row}]" for row in range(len(images))]
        decoded = []
        for key, image in zip(keys, images):
            source = image_source(image)
            decoded.append(self.scorer.decode(source, key) if source is not None else (None, f"{key}: no image (empty cell)."))
        rows = self.scorer.score_decoded(keys, decoded)
        for column in self.scorer.columns[1:]:
            batch[self.column_prefix + column] = [row[column] for row in rows]
        batch[FINGERPRINT_COLUMN] = [self.fingerprint_id] * len(rows)
        return batch
