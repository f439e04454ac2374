"""The MLLM captioning backend: any image-text-to-text model of ``transformers``.

``AutoProcessor`` + ``AutoModelForImageTextToText`` (LLaVA-1.5 in the paper), the model's chat
template, batched generation with left padding, bf16 (or fp16) on a GPU.

Sampling with one seed per caption: ``generate`` draws from one global random stream, so a
sampled caption would depend on the other rows of its batch (and so on the batch size, the
number of processes and where a resumed run restarts). Here each row gets its own
``torch.Generator`` seeded with the caption's seed and samples by the Gumbel-max trick
(:class:`PerRowGumbelSampler`): ``argmax(logits + Gumbel noise)`` is an exact draw from
``softmax(logits)``, after the usual temperature, top-k and top-p warpers. Greedy decoding is
``temperature=0``.
"""

from __future__ import annotations

import copy
import os

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from train_scripts.common.dtypes import resolve_dtype

__all__ = ["HFCaptioner", "PerRowGumbelSampler"]


class PerRowGumbelSampler(LogitsProcessor):
    """Makes greedy decoding sample, each row from its own seeded generator (Gumbel-max).

    Put it last in the logits processors of a ``do_sample=False`` generation: each step adds
    ``-log(-log(U))`` noise, ``U`` uniform from the row's generator, to the (warped) scores;
    filtered tokens stay at ``-inf``.
    """

    def __init__(self, seeds: list, device: torch.device):
        self.generators = [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[0] != len(self.generators):
            raise ValueError(f"{scores.shape[0]} rows but {len(self.generators)} seeds (beam search is not supported)")
        uniform = torch.stack(
            [torch.rand(scores.shape[-1], generator=g, device=scores.device, dtype=torch.float32) for g in self.generators]
        )
        tiny = torch.finfo(torch.float32).tiny
        gumbel = -torch.log(-torch.log(uniform.clamp(min=tiny, max=1.0 - 1e-7)))
        return scores.float() + gumbel


class HFCaptioner:
    """Captions images with an image-text-to-text model and its chat template.

    Args:
        model_name_or_path: a Hub id (e.g. ``llava-hf/llava-1.5-7b-hf``) or a local folder with
            the model and its processor (tokenizer with the image token, image processor, chat
            template).
        device: where the model runs.
        dtype: ``auto`` (bf16/fp16 on a GPU, fp32 on the CPU) or a dtype name.
        temperature, top_p, top_k: sampling settings; ``temperature=0`` is greedy decoding,
            ``top_k=0`` and ``top_p=1`` switch those filters off.
        max_new_tokens: the longest caption, in tokens.
    """

    def __init__(
        self,
        model_name_or_path: str,
        device: torch.device,
        dtype: str = "auto",
        temperature: float = 0.7,
        top_p: float = 0.9,
        top_k: int = 0,
        max_new_tokens: int = 128,
    ):
        if temperature < 0 or not 0 < top_p <= 1 or top_k < 0 or max_new_tokens < 1:
            raise ValueError(
                f"need temperature >= 0, 0 < top_p <= 1, top_k >= 0, max_new_tokens >= 1; got "
                f"{temperature}, {top_p}, {top_k}, {max_new_tokens}"
            )
        self.name = model_name_or_path.rstrip("/") if not os.path.isdir(model_name_or_path) else os.path.abspath(model_name_or_path)
        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.temperature, self.top_p, self.top_k, self.max_new_tokens = float(temperature), float(top_p), int(top_k), int(max_new_tokens)
        try:
            self.processor = AutoProcessor.from_pretrained(model_name_or_path)
            self.model = AutoModelForImageTextToText.from_pretrained(model_name_or_path, dtype=self.dtype)
        except (OSError, ValueError) as error:
            raise ValueError(f"--captioner {model_name_or_path}: cannot load an image-text-to-text model and its processor ({error})") from error
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is None or getattr(self.processor, "chat_template", None) is None:
            raise ValueError(f"--captioner {model_name_or_path}: the processor needs a tokenizer and a chat template")
        tokenizer.padding_side = "left"  # decoder-only generation continues from the right end
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.model.to(self.device).eval()
        self.generation_config = copy.deepcopy(self.model.generation_config)
        # Sampling is done by PerRowGumbelSampler on top of greedy decoding (see the module docstring).
        self.generation_config.update(
            do_sample=False, num_beams=1, max_new_tokens=self.max_new_tokens, temperature=None, top_p=None, top_k=None,
            pad_token_id=tokenizer.pad_token_id,
        )

    def settings(self) -> dict:
        """The generation settings recorded with every caption."""
        return {
            "backend": "transformers",
            "model": self.name,
            "model_class": type(self.model).__name__,
            "dtype": str(self.dtype).replace("torch.", ""),
            "do_sample": self.temperature > 0,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "max_new_tokens": self.max_new_tokens,
            "sampler": "gumbel-max, one generator per caption seed" if self.temperature > 0 else "greedy",
        }

    def chat_text(self, prompt: str) -> str:
        """The model's chat template applied to one user turn: the image, then ``prompt``."""
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        return self.processor.apply_chat_template(conversation, add_generation_prompt=True)

    def _logits_processors(self, seeds: list) -> LogitsProcessorList:
        processors = LogitsProcessorList()
        if self.temperature == 0:
            return processors
        if self.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(self.temperature))
        if self.top_k > 0:
            processors.append(TopKLogitsWarper(self.top_k))
        if self.top_p < 1.0:
            processors.append(TopPLogitsWarper(self.top_p))
        processors.append(PerRowGumbelSampler(seeds, self.device))
        return processors

    @torch.inference_mode()
    def caption(self, images: list, prompts: list, seeds: list) -> list:
        """One caption per ``(image, prompt, seed)`` row, generated as one batch."""
        if not len(images) == len(prompts) == len(seeds):
            raise ValueError("images, prompts and seeds must have the same length")
        inputs = self.processor(
            images=images, text=[self.chat_text(prompt) for prompt in prompts], padding=True, return_tensors="pt"
        ).to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        output = self.model.generate(
            **inputs, generation_config=self.generation_config, logits_processor=self._logits_processors(seeds)
        )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return [text.strip() for text in self.processor.batch_decode(new_tokens, skip_special_tokens=True)]
