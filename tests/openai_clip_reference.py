"""Independent references for OpenAI CLIP: a plain-torch ViT CLIP forward pass, tiny random
OpenAI-format checkpoints, and OpenAI's BPE text encoding.

Written from the description of OpenAI CLIP (pre-LN residual blocks with a packed
``nn.MultiheadAttention``, QuickGELU, causal text mask, class-token and end-of-text pooling,
``x @ proj`` projections), not from transformers. Parameter names follow OpenAI's checkpoints,
so ``load_state_dict`` on an OpenAI state_dict is strict.
"""

import gzip
import html
import math
from collections import OrderedDict

import regex
import torch
from torch import nn


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """x + attn(ln_1(x)), then x + mlp(ln_2(x)); x is [batch, tokens, width]."""

    def __init__(self, width: int, heads: int, mlp_width: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(c_fc=nn.Linear(width, mlp_width), gelu=QuickGELU(), c_proj=nn.Linear(mlp_width, width))
        )

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        normed = self.ln_1(x)
        x = x + self.attn(normed, normed, normed, attn_mask=attn_mask, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_width: int):
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads, mlp_width) for _ in range(layers))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, attn_mask)
        return x


class VisionTower(nn.Module):
    def __init__(self, image_size: int, patch: int, width: int, layers: int, heads: int, embed_dim: int):
        super().__init__()
        grid = image_size // patch
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(width))
        self.positional_embedding = nn.Parameter(torch.empty(grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, 4 * width)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.empty(width, embed_dim))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        patches = self.conv1(pixels).flatten(2).transpose(1, 2)  # [B, grid**2, width]
        cls = self.class_embedding.expand(patches.shape[0], 1, -1)  # [B, 1, width]
        x = torch.cat([cls, patches], dim=1) + self.positional_embedding
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0]) @ self.proj  # [B, embed_dim]


class OpenAICLIPReference(nn.Module):
    """OpenAI ViT CLIP; parameter names are exactly those of OpenAI's state_dicts."""

    def __init__(
        self,
        *,
        image_size: int,
        patch: int,
        vision_width: int,
        vision_layers: int,
        text_width: int,
        text_layers: int,
        vocab: int,
        context: int,
        embed_dim: int,
        head_dim: int,
    ):
        super().__init__()
        self.visual = VisionTower(image_size, patch, vision_width, vision_layers, vision_width // head_dim, embed_dim)
        self.token_embedding = nn.Embedding(vocab, text_width)
        self.positional_embedding = nn.Parameter(torch.empty(context, text_width))
        self.transformer = Transformer(text_width, text_layers, text_width // head_dim, 4 * text_width)
        self.ln_final = nn.LayerNorm(text_width)
        self.text_projection = nn.Parameter(torch.empty(text_width, embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    @classmethod
    def from_state_dict(cls, state_dict: dict, head_dim: int = 64) -> "OpenAICLIPReference":
        """Build from an OpenAI state_dict, computing in float32."""
        width, _, patch, _ = state_dict["visual.conv1.weight"].shape
        grid = math.isqrt(state_dict["visual.positional_embedding"].shape[0] - 1)
        model = cls(
            image_size=patch * grid,
            patch=patch,
            vision_width=width,
            vision_layers=1 + max(int(k.split(".")[3]) for k in state_dict if k.startswith("visual.transformer.")),
            text_width=state_dict["ln_final.weight"].shape[0],
            text_layers=1 + max(int(k.split(".")[2]) for k in state_dict if k.startswith("transformer.")),
            vocab=state_dict["token_embedding.weight"].shape[0],
            context=state_dict["positional_embedding"].shape[0],
            embed_dim=state_dict["text_projection"].shape[1],
            head_dim=head_dim,
        )
        model.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=True)
        return model.eval()

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual(pixels)

    def encode_text(self, token_ids: torch.Tensor) -> torch.Tensor:
        """token_ids [B, context]; pooled at the end-of-text token, the highest id of each row."""
        context = token_ids.shape[1]
        causal = torch.full((context, context), float("-inf")).triu(1)  # mask future tokens
        x = self.token_embedding(token_ids) + self.positional_embedding
        x = self.ln_final(self.transformer(x, attn_mask=causal))  # [B, context, width]
        eot = token_ids.argmax(dim=-1)
        return x[torch.arange(x.shape[0]), eot] @ self.text_projection  # [B, embed_dim]


def make_random_openai_state_dict(
    *,
    image_size: int = 32,
    patch: int = 8,
    vision_width: int = 64,
    vision_layers: int = 2,
    text_width: int = 64,
    text_layers: int = 2,
    vocab: int = 49408,
    context: int = 77,
    embed_dim: int = 32,
    head_dim: int = 16,
    dtype: torch.dtype = torch.float16,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, torch.Tensor]:
    """A random OpenAI-format ViT CLIP state_dict (fp16 like OpenAI's releases).

    Every parameter, biases and layer norms included, is random so that a mis-mapped tensor
    changes the outputs. ``device="meta"`` gives shapes only (e.g. a full ViT-B/16). ``head_dim``
    only has to divide both widths: the head count does not change any tensor's shape.
    """
    with torch.device(device):
        model = OpenAICLIPReference(
            image_size=image_size,
            patch=patch,
            vision_width=vision_width,
            vision_layers=vision_layers,
            text_width=text_width,
            text_layers=text_layers,
            vocab=vocab,
            context=context,
            embed_dim=embed_dim,
            head_dim=head_dim,
        )
    if device != "meta":
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name == "logit_scale":
                    continue
                noise = torch.randn(param.shape, generator=generator)
                module, _, kind = name.rpartition(".")
                if module.rpartition(".")[2].startswith("ln_") and kind == "weight":  # layer-norm gains
                    param.copy_(1 + 0.1 * noise)
                elif param.dim() >= 2:
                    param.copy_(noise / math.sqrt(param[0].numel()))
                else:
                    param.copy_(0.1 * noise)
    return {name: tensor.to(dtype) for name, tensor in model.state_dict().items()}


class OpenAIBPEReference:
    """OpenAI CLIP's text encoding, re-implemented: clean, split, byte-encode, merge by rank.

    Follows ``SimpleTokenizer.encode`` except ``ftfy.fix_text`` (not installed here): HTML
    unescaping (twice), whitespace collapsing, stripping and lower-casing, then byte-level BPE
    applying the lowest-ranked merge everywhere until none applies.
    """

    PATTERN = regex.compile(
        r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
        regex.IGNORECASE,
    )

    def __init__(self, merges_path: str):
        with gzip.open(merges_path, "rt", encoding="utf-8") as handle:
            self.merges = [tuple(line.split()) for line in handle.read().split("\n")[1 : 49152 - 256 - 2 + 1]]
        self.ranks = {merge: rank for rank, merge in enumerate(self.merges)}
        printable = [b for b in range(256) if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255]
        shifted = [b for b in range(256) if b not in printable]
        self.byte_char = {b: chr(b) for b in printable} | {b: chr(256 + i) for i, b in enumerate(shifted)}
        symbols = [self.byte_char[b] for b in printable + shifted]
        tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in self.merges]
        tokens += ["<|startoftext|>", "<|endoftext|>"]
        self.ids = {token: i for i, token in enumerate(tokens)}

    def _bpe(self, word: str) -> list[str]:
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            rank = min(self.ranks.get(pair, math.inf) for pair in zip(parts, parts[1:]))
            if rank == math.inf:
                break
            first, second = self.merges[rank]
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == (first, second):
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return parts

    def encode(self, text: str) -> list[int]:
        """Token ids with <|startoftext|> and <|endoftext|> around them."""
        text = regex.sub(r"\s+", " ", html.unescape(html.unescape(text))).strip().lower()
        ids = [self.ids["<|startoftext|>"]]
        for word in self.PATTERN.findall(text):
            ids += [self.ids[part] for part in self._bpe("".join(self.byte_char[b] for b in word.encode("utf-8")))]
        return ids + [self.ids["<|endoftext|>"]]
