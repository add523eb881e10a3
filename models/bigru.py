"""Bidirectional GRU (paper 2.1.3): as LSTM-word2vec (word2vec-initialised
track embedding + track features), with a bidirectional GRU encoder and a GRU
decoder.

The encoder reads the first half packed (the backward direction starts at the
last real track, never at padding); its final forward and backward states are
joined and mapped (tanh of a linear layer) to the decoder's initial state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from models.config import CommonConfig
from models.data import DataInfo
from models.encoder_decoder import EncoderDecoder
from models.heads import OutputHead
from models.inputs import InputEmbedding
from models import lstm_w2v
from models.lstm import run_packed
from models.word2vec import Word2VecOptions, pretrain_word2vec, pretrained_vectors


@dataclass
class BiGRUConfig(CommonConfig, Word2VecOptions):
    embedding_dim: int = 100  # = the word2vec dimension
    use_track_features: bool = True
    hidden_size: int = 512  # per direction in the encoder; the decoder's width
    num_layers: int = 1

    def __post_init__(self):
        super().__post_init__()
        if self.hidden_size <= 0 or self.num_layers <= 0:
            raise ValueError("BiGRUConfig: hidden_size and num_layers must be positive")


class BiGRU(EncoderDecoder):
    incremental_decoding = True

    def __init__(self, config: BiGRUConfig, task: str, info: DataInfo):
        super().__init__(config, task, info)
        h, layers = config.hidden_size, config.num_layers
        between = config.dropout if layers > 1 else 0.0
        self.inputs = InputEmbedding(config, info, pretrained_vectors(config, info))
        self.encoder = nn.GRU(self.inputs.encoder_dim, h, layers, batch_first=True, dropout=between, bidirectional=True)
        self.bridge = nn.Linear(2 * h, h)
        self.decoder = nn.GRU(self.inputs.decoder_dim, h, layers, batch_first=True, dropout=between)
        self.dropout = nn.Dropout(config.dropout)
        self.head = OutputHead(h, task, info, config)

    def encode(self, batch: dict) -> dict:
        final = run_packed(self.encoder, self.inputs.encoder(batch, self.task), batch["n_in"])  # (layers*2, B, H)
        layers, b = self.config.num_layers, final.shape[1]
        both = final.view(layers, 2, b, -1).permute(2, 0, 1, 3).reshape(b, layers, -1)  # (B, layers, 2H)
        return {"h": torch.tanh(self.bridge(both))}  # (B, layers, H)

    def decode(self, memory: dict, x: torch.Tensor, state: dict | None):
        h0 = (memory if state is None else state)["h"].transpose(0, 1).contiguous()
        out, h = self.decoder(x, h0)  # (B, t, H)
        return self.dropout(out), {"h": h.transpose(0, 1)}


def build(config: BiGRUConfig, task: str, info: DataInfo) -> BiGRU:
    return BiGRU(config, task, info)


pretrain = pretrain_word2vec

# The LSTM-word2vec's space and paper configurations (paper 2.1.3: the same sizes, a GRU cell).
SEARCH_SPACE = dict(lstm_w2v.SEARCH_SPACE)
PAPER_CONFIGS = {task: dict(config) for task, config in lstm_w2v.PAPER_CONFIGS.items()}
