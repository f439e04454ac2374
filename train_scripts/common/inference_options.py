"""The option groups the inference jobs of `train_scripts/` share (captioning, AIR purification):
the model's compute dtype, the image-decoding workers and the resumable JSONL output. Each flag
and its default is written here once; a script's arguments dataclass inherits the groups it has
(`common/flags.py` parses them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from train_scripts.common.dtypes import DTYPES
from train_scripts.common.flags import OptionGroup


@dataclass(kw_only=True)
class DtypeArguments:
    """`--dtype`: the name `resolve_dtype` turns into the compute dtype on the job's device."""

    dtype: str = field(default="auto", metadata={"choices": ["auto", *DTYPES], "help": "Model dtype (auto: bf16/fp16 on a GPU, fp32 on the CPU)."})


@dataclass(kw_only=True)
class DecodingArguments(OptionGroup):
    """`--num_workers`: the DataLoader processes that decode images while the model runs
    (fine-tuning's own `--num_workers`, in `FinetuneOptions`, keeps its default of 0)."""

    num_workers: int = field(default=2, metadata={"help": "Image decoding worker processes (default 2; 0 = in the main process)."})

    def __post_init__(self) -> None:
        if self.num_workers < 0:
            raise ValueError("--num_workers must be >= 0")
        super().__post_init__()


@dataclass(kw_only=True)
class JsonlOutputArguments(OptionGroup):
    """The output of a job written through `modeling_uniqa.scoring.sharded_output`: a JSONL file,
    per-process part files, `--resume` after a kill."""

    _argument_group_name = "output"

    output: str = field(metadata={"help": "The JSONL file to write (one record a line)."})
    resume: bool = field(default=False, metadata={"help": "Continue an interrupted or shorter run: keep its records, write the missing ones."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing output that this script did not write."})

    def __post_init__(self) -> None:
        if not self.output.lower().endswith(".jsonl"):
            raise ValueError(f"--output must be a .jsonl file, got {self.output}")
        super().__post_init__()


__all__ = ["DecodingArguments", "DtypeArguments", "JsonlOutputArguments"]
