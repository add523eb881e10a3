"""BERT-augmented Transformer (paper 2.2.3, after Zhu et al. 2020, "Incorporating
BERT into Neural Machine Translation").

A pre-trained BERT (``bert.py``, Cloze on training sessions) reads the first
half's tracks as played (what it was pre-trained on; the skips reach the model
through the Transformer encoder's own input) and is kept fixed by default, as
in Zhu et al. Then, in a Transformer encoder-decoder (``transformer.py``):

- every encoder layer attends to its own input (self-attention) and to the
  BERT states (BERT-attention);
- every decoder layer runs causal self-attention, then attends to the encoder
  output and to the BERT states;

and the two attentions are combined with drop-net: in training, with
probability ``drop_net / 2`` only the first is used, with ``drop_net / 2`` only
the second, otherwise their average; in evaluation always the average. Paper's
sizes: 2 layers, 2 heads, d = 256, dropout 0.2 (the BERT: 4 layers, 4 heads, d = 256).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from data_pipeline.schema import PAD_ID
from models import bert
from models.bert import BertConfig, BertLM, ClozeOptions, load_pretrained_bert
from models.bert import pretrain as pretrain_bert
from models.config import CommonConfig
from models.data import DataInfo
from models import transformer
from models.transformer import Attention, DecoderBlock, EncoderBlock, Transformer, check_heads


@dataclass
class BertFusedConfig(CommonConfig, ClozeOptions):
    embedding_dim: int = 256  # the Transformer's d_model
    num_layers: int = 2
    num_heads: int = 2
    ffn_dim: int = 1024
    drop_net: float = 1.0  # Zhu et al.'s best p_net
    freeze_bert: bool = True
    # the pre-trained BERT (bert.py's paper configuration)
    bert_embedding_dim: int = 256
    bert_num_layers: int = 4
    bert_num_heads: int = 4
    bert_ffn_dim: int = 1024

    def __post_init__(self):
        super().__post_init__()
        check_heads(self)
        if not 0.0 <= self.drop_net <= 1.0:
            raise ValueError(f"BertFusedConfig.drop_net = {self.drop_net}: must be in [0, 1]")
        self.bert_config()  # validates the BERT's sizes

    def bert_config(self) -> BertConfig:
        return BertConfig(
            embedding_dim=self.bert_embedding_dim,
            num_layers=self.bert_num_layers,
            num_heads=self.bert_num_heads,
            ffn_dim=self.bert_ffn_dim,
            dropout=self.pretrain_dropout,
            mask_prob=self.mask_prob,
        )


def drop_net(a: torch.Tensor, b: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Zhu et al.'s drop-net: one draw per layer and step; the average at evaluation."""
    if not training or p == 0.0:
        return 0.5 * (a + b)
    u = float(torch.rand(()))
    if u < p / 2:
        return a
    if u < p:
        return b
    return 0.5 * (a + b)


class FusedEncoderBlock(EncoderBlock):
    """The Transformer's encoder block whose self-attention is drop-netted with attention to the BERT states."""

    def __init__(self, dim, num_heads, ffn_dim, dropout, bert_dim, drop_net_p):
        super().__init__(dim, num_heads, ffn_dim, dropout)
        self.bert_attn = Attention(dim, num_heads, dropout, source_dim=bert_dim)
        self.drop_net_p = drop_net_p

    def forward(self, x, allowed, bert):
        h = self.ln_1(x)
        x = x + drop_net(self.attn(h, h, allowed), self.bert_attn(h, bert, allowed), self.drop_net_p, self.training)
        return x + self.ffn(self.ln_2(x))


class FusedDecoderBlock(DecoderBlock):
    """The Transformer's decoder block whose encoder attention is drop-netted with attention to the BERT states."""

    def __init__(self, dim, num_heads, ffn_dim, dropout, bert_dim, drop_net_p):
        super().__init__(dim, num_heads, ffn_dim, dropout)
        self.bert_attn = Attention(dim, num_heads, dropout, source_dim=bert_dim)
        self.drop_net_p = drop_net_p

    def forward(self, y, memory, self_allowed, memory_allowed, bert):
        h = self.ln_1(y)
        y = y + self.self_attn(h, h, self_allowed)
        h = self.ln_2(y)
        y = y + drop_net(
            self.cross_attn(h, memory, memory_allowed), self.bert_attn(h, bert, memory_allowed), self.drop_net_p, self.training
        )
        return y + self.ffn(self.ln_3(y))


class BertFusedTransformer(Transformer):
    """The Transformer of transformer.py with fused blocks that also attend to a pre-trained BERT's states."""

    def __init__(self, config: BertFusedConfig, task: str, info: DataInfo):
        bert_lm = BertLM(config.bert_config(), info.vocab_size)
        load_pretrained_bert(bert_lm, config, info)
        super().__init__(config, task, info)
        self.bert = bert_lm.encoder
        if config.freeze_bert:
            self.bert.requires_grad_(False)

    def encoder_block(self) -> nn.Module:
        c = self.config
        return FusedEncoderBlock(c.embedding_dim, c.num_heads, c.ffn_dim, c.dropout, c.bert_embedding_dim, c.drop_net)

    def decoder_block(self) -> nn.Module:
        c = self.config
        return FusedDecoderBlock(c.embedding_dim, c.num_heads, c.ffn_dim, c.dropout, c.bert_embedding_dim, c.drop_net)

    def side_input(self, batch: dict) -> torch.Tensor:
        """The BERT's states of the first half's tracks as played (B, 10, bert_dim)."""
        in_mask = batch["in_mask"]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_bert):
            return self.bert(batch["in_tracks"].masked_fill(~in_mask, PAD_ID), in_mask)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.config.freeze_bert:
            self.bert.eval()  # a fixed BERT: no dropout either
        return self


def build(config: BertFusedConfig, task: str, info: DataInfo) -> BertFusedTransformer:
    return BertFusedTransformer(config, task, info)


pretrain = pretrain_bert

# The fused Transformer's own sizes and the training knobs; the BERT's sizes stay
# the paper's so that every point shares one pre-trained BERT.
SEARCH_SPACE = {
    **{name: space for name, space in transformer.SEARCH_SPACE.items() if name not in ("lr", "batch_size")},
    "drop_net": ("uniform", 0.0, 1.0),
    "lr": transformer.SEARCH_SPACE["lr"],
    "batch_size": transformer.SEARCH_SPACE["batch_size"],
}

PAPER_CONFIGS = {task: dict(config) for task, config in transformer.PAPER_CONFIGS.items()}  # the standard Transformer's sizes

# --budget small: the same small BERT as bert.py's, so both families share one pre-training run.
SMALL_SETTINGS = {"bert_embedding_dim": 64, "bert_num_layers": 2, "bert_ffn_dim": 256, "pretrain_epochs": 5, "pretrain_lr": 2e-3}
SMALL_TASK_SETTINGS = bert.SMALL_TASK_SETTINGS  # the pre-training fields have the same names in both configs

# The search's first point averages the two attentions in every step (drop_net 0): with drop-net at 1,
# half the steps train without the layer's own attention, and 3 epochs do not learn seq past a
# Markov chain on the embedded synthetic set (0.16 against 0.19 val MAA; 0.19-0.20 with drop_net 0).
START_OVERRIDES = {"skip": {"drop_net": 0.0}, "seq": {"drop_net": 0.0}}
