"""LSTM encoder-decoder (paper 2.1.1): one 512-d LSTM layer each side.

The encoder reads the first half (packed, so padding is never read) and hands
its final (h, c) to the decoder, which reads the second half's tracks (skip
task) or the right-shifted targets (seq task). ``skip_padding=False`` is the
paper's "no skip padding" row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence

from models.config import CommonConfig
from models.data import DataInfo
from models.encoder_decoder import EncoderDecoder
from models.heads import OutputHead
from models.inputs import InputEmbedding


@dataclass
class LSTMConfig(CommonConfig):
    hidden_size: int = 512
    num_layers: int = 1

    def __post_init__(self):
        super().__post_init__()
        if self.hidden_size <= 0 or self.num_layers <= 0:
            raise ValueError("LSTMConfig: hidden_size and num_layers must be positive")


def run_packed(rnn: nn.RNNBase, x: torch.Tensor, lengths: torch.Tensor):
    """Run `rnn` over the first `lengths` steps of each row of x (B, T, D); returns its final state."""
    packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
    _, state = rnn(packed)
    return state  # (layers * directions, B, H) [, same for c]


class LSTMEncoderDecoder(EncoderDecoder):
    incremental_decoding = True

    def __init__(self, config: LSTMConfig, task: str, info: DataInfo, pretrained_tracks=None):
        super().__init__(config, task, info)
        self.inputs = InputEmbedding(config, info, pretrained_tracks)
        between = config.dropout if config.num_layers > 1 else 0.0
        self.encoder = nn.LSTM(self.inputs.encoder_dim, config.hidden_size, config.num_layers, batch_first=True, dropout=between)
        self.decoder = nn.LSTM(self.inputs.decoder_dim, config.hidden_size, config.num_layers, batch_first=True, dropout=between)
        self.dropout = nn.Dropout(config.dropout)
        self.head = OutputHead(config.hidden_size, task, info, config)

    def encode(self, batch: dict) -> dict:
        h, c = run_packed(self.encoder, self.inputs.encoder(batch, self.task), batch["n_in"])
        return {"h": h.transpose(0, 1), "c": c.transpose(0, 1)}  # (B, layers, H): batch-first for beams

    def decode(self, memory: dict, x: torch.Tensor, state: dict | None):
        state = memory if state is None else state
        h0 = state["h"].transpose(0, 1).contiguous()
        c0 = state["c"].transpose(0, 1).contiguous()
        out, (h, c) = self.decoder(x, (h0, c0))  # (B, t, H)
        return self.dropout(out), {"h": h.transpose(0, 1), "c": c.transpose(0, 1)}


def build(config: LSTMConfig, task: str, info: DataInfo) -> LSTMEncoderDecoder:
    return LSTMEncoderDecoder(config, task, info)


SEARCH_SPACE = {
    "hidden_size": ("choice", [128, 256, 512, 1024]),
    "num_layers": ("randint", 1, 3),
    "embedding_dim": ("choice", [64, 128, 256]),
    "dropout": ("uniform", 0.0, 0.5),
    "lr": ("loguniform", 1e-5, 3e-3),
    "batch_size": ("choice", [64, 128, 256, 512]),
}

PAPER_CONFIGS = {
    "skip": {"hidden_size": 512, "num_layers": 1, "lr": 1e-5, "batch_size": 256},
    "seq": {"hidden_size": 512, "num_layers": 1, "lr": 1e-4, "batch_size": 256},
}
