"""Transformer encoder-decoder (paper 2.2.1, after Vaswani et al. 2017).

Learned positional embeddings, a bidirectional encoder over the first half
(key-padding mask), and a causal decoder (each position sees only earlier
decoder inputs) that cross-attends to the encoder. Paper's best for both
tasks: 2 layers, 2 heads, d = 256, dropout 0.2. Blocks are pre-LayerNorm.

The attention and block classes here are also the building blocks of
``bert.py`` and ``bert_fused.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from data_pipeline.dataset import HALF_LENGTH
from models.config import CommonConfig
from models.data import DataInfo
from models.encoder_decoder import EncoderDecoder
from models.heads import OutputHead
from models.inputs import InputEmbedding


@dataclass
class TransformerConfig(CommonConfig):
    embedding_dim: int = 256  # = d_model, the attention dimension
    num_layers: int = 2  # encoder layers = decoder layers
    num_heads: int = 2
    ffn_dim: int = 1024

    def __post_init__(self):
        super().__post_init__()
        check_heads(self)


def check_heads(config) -> None:
    if config.embedding_dim % config.num_heads:
        raise ValueError(
            f"{type(config).__name__}: embedding_dim {config.embedding_dim} is not divisible by "
            f"num_heads {config.num_heads}"
        )


# ---------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------


def padding_mask(key_mask: torch.Tensor) -> torch.Tensor:
    """(B, 1, 1, Tk) attention mask from a key mask (B, Tk), True = may attend.

    Key 0 always stays visible so that no row of attention is empty (which
    would give NaN); every real session has at least one input track there.
    """
    key_mask = key_mask.clone()
    key_mask[:, 0] = True
    return key_mask[:, None, None, :]


def causal_mask(length: int, device) -> torch.Tensor:
    """(1, 1, T, T): position t may attend to positions <= t."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()[None, None]


class Attention(nn.Module):
    """Multi-head attention of queries x (B, Tq, d) over keys/values `source` (B, Tk, source_dim or d)."""

    def __init__(self, dim: int, num_heads: int, dropout: float, source_dim: int | None = None):
        super().__init__()
        self.num_heads = num_heads
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(source_dim or dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, source: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, tq, d = x.shape
        tk, h = source.shape[1], self.num_heads
        q = self.query(x).view(b, tq, h, d // h).transpose(1, 2)  # (B, h, Tq, dh)
        k, v = self.key_value(source).split(d, dim=-1)
        k = k.view(b, tk, h, d // h).transpose(1, 2)  # (B, h, Tk, dh)
        v = v.view(b, tk, h, d // h).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(b, tq, d)  # (B, Tq, d)
        return self.resid_dropout(self.proj(y))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class EncoderBlock(nn.Module):
    """Self-attention + feed-forward (pre-LayerNorm)."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, dropout)
        self.ln_2 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_dim, dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, side: torch.Tensor | None = None) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, allowed)
        return x + self.ffn(self.ln_2(x))


class DecoderBlock(nn.Module):
    """Causal self-attention + attention to the encoder + feed-forward (pre-LayerNorm)."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, num_heads, dropout)
        self.ln_2 = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim, num_heads, dropout)
        self.ln_3 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_dim, dropout)

    def forward(self, x, memory, self_allowed, memory_allowed, side=None) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.self_attn(h, h, self_allowed)
        x = x + self.cross_attn(self.ln_2(x), memory, memory_allowed)
        return x + self.ffn(self.ln_3(x))


def project(in_dim: int, dim: int) -> nn.Module:
    """Input vectors -> model width (identity when they already match)."""
    return nn.Identity() if in_dim == dim else nn.Linear(in_dim, dim)


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------


class Transformer(EncoderDecoder):
    def __init__(self, config: TransformerConfig, task: str, info: DataInfo):
        super().__init__(config, task, info)
        d = config.embedding_dim
        self.inputs = InputEmbedding(config, info)
        self.encoder_in = project(self.inputs.encoder_dim, d)
        self.decoder_in = project(self.inputs.decoder_dim, d)
        self.encoder_pos = nn.Embedding(HALF_LENGTH, d)
        self.decoder_pos = nn.Embedding(HALF_LENGTH, d)
        self.encoder_blocks = nn.ModuleList([self.encoder_block() for _ in range(config.num_layers)])
        self.decoder_blocks = nn.ModuleList([self.decoder_block() for _ in range(config.num_layers)])
        self.encoder_ln = nn.LayerNorm(d)
        self.decoder_ln = nn.LayerNorm(d)
        self.head = OutputHead(d, task, info, config)

    # What a variant changes (bert_fused.py): the blocks, and a side input every block may attend to.

    def encoder_block(self) -> nn.Module:
        c = self.config
        return EncoderBlock(c.embedding_dim, c.num_heads, c.ffn_dim, c.dropout)

    def decoder_block(self) -> nn.Module:
        c = self.config
        return DecoderBlock(c.embedding_dim, c.num_heads, c.ffn_dim, c.dropout)

    def side_input(self, batch: dict) -> torch.Tensor | None:
        """Extra states (B, 10, d_side) every block may attend to; none in the standard Transformer."""
        return None

    def encode(self, batch: dict) -> dict:
        side = self.side_input(batch)
        x = self.encoder_in(self.inputs.encoder(batch, self.task))  # (B, 10, d)
        x = x + self.encoder_pos(torch.arange(x.shape[1], device=x.device))
        allowed = padding_mask(batch["in_mask"])
        for block in self.encoder_blocks:
            x = block(x, allowed, side)
        memory = {"memory": self.encoder_ln(x), "memory_mask": batch["in_mask"]}
        return memory if side is None else {**memory, "side": side}

    def decode(self, memory: dict, x: torch.Tensor, state=None):
        y = self.decoder_in(x)  # (B, t, d)
        y = y + self.decoder_pos(torch.arange(y.shape[1], device=y.device))
        self_allowed = causal_mask(y.shape[1], y.device)
        memory_allowed = padding_mask(memory["memory_mask"])
        for block in self.decoder_blocks:
            y = block(y, memory["memory"], self_allowed, memory_allowed, memory.get("side"))
        return self.decoder_ln(y), None


def build(config: TransformerConfig, task: str, info: DataInfo) -> Transformer:
    return Transformer(config, task, info)


SEARCH_SPACE = {
    "embedding_dim": ("choice", [64, 128, 256, 512]),
    "num_layers": ("randint", 1, 5),
    "num_heads": ("choice", [1, 2, 4, 8]),
    "ffn_dim": ("choice", [256, 512, 1024, 2048]),
    "dropout": ("uniform", 0.0, 0.5),
    "lr": ("loguniform", 1e-5, 3e-3),
    "batch_size": ("choice", [64, 128, 256, 512]),
}

PAPER_CONFIGS = {
    "skip": {"embedding_dim": 256, "num_layers": 2, "num_heads": 2, "dropout": 0.2, "lr": 1e-5, "batch_size": 256},
    "seq": {"embedding_dim": 256, "num_layers": 2, "num_heads": 2, "dropout": 0.2, "lr": 1e-4, "batch_size": 256},
}
