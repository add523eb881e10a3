"""What the encoder and decoder read: track embeddings, track features and the session's context.

Batch convention (see ``data_pipeline.dataset``): halves are left-aligned and
padded to 10 positions; ``in_mask`` / ``out_mask`` say which positions are
real. Padding never reaches a real position and never counts in a loss.

- ``encoder_tokens``: the first half's track ids as the encoder sees them
  (skip task: skipped tracks become ``<SKIP>``, the paper's "skip padding");
- ``InputEmbedding``: the track embedding (optionally initialised from
  pre-trained vectors) plus ``SessionFeatures`` (track features, and with
  ``use_context`` the first half's interaction columns, ``ContextEncoder``);
- ``drop_tracks``: track dropout (training replaces ids by ``<unk>``);
- ``shifted_targets``: the seq decoder's teacher-forcing inputs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from data_pipeline.schema import (
    CATEGORICAL_SEQUENCE_COLUMNS,
    CATEGORICAL_VALUES,
    CONTEXT_COLUMNS,
    FIRST_TRACK_ID,
    MASK_ID,
    PAD_ID,
    SKIP_ID,
    UNK_ID,
)
from models.config import CommonConfig
from models.data import DataInfo

START_ID = MASK_ID  # the decoder's input at step 0 (seq task): no track precedes the second half


def encoder_tokens(batch: dict, task: str, skip_padding: bool) -> torch.Tensor:
    """First-half track ids as the encoder sees them: for `skip`, skipped tracks -> <SKIP>."""
    tokens = batch["in_tracks"]  # (B, 10)
    if task == "skip" and skip_padding:
        tokens = torch.where(batch["in_skip_2"].bool() & batch["in_mask"], torch.full_like(tokens, SKIP_ID), tokens)
    return tokens.masked_fill(~batch["in_mask"], PAD_ID)


def drop_tracks(tokens: torch.Tensor, p: float) -> torch.Tensor:
    """Replace each real track id (not pad, mask, skip) by <unk> with probability `p` (training only)."""
    if p <= 0.0:
        return tokens
    hit = (torch.rand(tokens.shape, device=tokens.device) < p) & (tokens >= FIRST_TRACK_ID)
    return tokens.masked_fill(hit, UNK_ID)


def shifted_targets(out_tracks: torch.Tensor) -> torch.Tensor:
    """Decoder inputs for teacher forcing: step t gets target t-1, step 0 the start token."""
    start = torch.full_like(out_tracks[:, :1], START_ID)
    return torch.cat([start, out_tracks[:, :-1]], dim=1)  # (B, T)


# The interaction columns that are categories (embedded); the others are counts or 0/1 flags.
_CATEGORICAL_CONTEXT = ("context_type", "reason_start", "reason_end", "hour_of_day")
_COUNT_CONTEXT = ("n_seekfwd", "n_seekback")


def category_count(name: str, categories: dict) -> int:
    """How many codes a categorical column has (its known values, at least the schema's plus <pad/unknown>)."""
    if name == "hour_of_day":
        return 24
    raw = CATEGORICAL_SEQUENCE_COLUMNS[name]
    known = categories.get(name) or categories.get(raw) or ()
    return max(len(known), len(CATEGORICAL_VALUES[raw]) + 1)


class ContextEncoder(nn.Module):
    """The first half's interaction columns (schema.CONTEXT_COLUMNS) as one vector per position."""

    def __init__(self, categories: dict, embedding_dim: int):
        super().__init__()
        self.categorical = [c for c in CONTEXT_COLUMNS if c in _CATEGORICAL_CONTEXT]
        self.numeric = [c for c in CONTEXT_COLUMNS if c not in _CATEGORICAL_CONTEXT]
        self.embeddings = nn.ModuleDict(
            {c: nn.Embedding(category_count(c, categories), embedding_dim) for c in self.categorical}
        )
        self.dim = len(self.categorical) * embedding_dim + len(self.numeric)

    def forward(self, batch: dict) -> torch.Tensor:
        parts = [self.embeddings[c](batch[f"in_{c}"]) for c in self.categorical]
        numeric = []
        for c in self.numeric:
            x = batch[f"in_{c}"].float()
            numeric.append(torch.log1p(x.clamp(min=0)) if c in _COUNT_CONTEXT else x)
        parts.append(torch.stack(numeric, dim=-1))
        return torch.cat(parts, dim=-1) * batch["in_mask"].unsqueeze(-1)  # (B, 10, dim)


class SessionFeatures(nn.Module):
    """Extra per-position inputs besides the track embedding: track features and session context.

    ``encoder(batch)`` is for first-half positions (track features of the input
    tracks, as played, and the interaction columns); ``decoder(tokens)`` for
    second-half positions (track features of the given / previous tracks).
    Either may have width 0.
    """

    def __init__(self, config: CommonConfig, info: DataInfo):
        super().__init__()
        self.use_features = config.use_track_features or config.use_context
        if self.use_features:
            if info.track_features is None:
                raise ValueError(
                    "use_track_features/use_context need DataInfo.track_features (float32 [vocab_size, F]); "
                    "build the DataInfo with DataInfo.from_dataset(dataset)."
                )
            features = torch.as_tensor(np.asarray(info.track_features), dtype=torch.float32)
            if features.shape[0] != info.vocab_size:
                raise ValueError(
                    f"DataInfo.track_features has {features.shape[0]} rows but vocab_size is {info.vocab_size}"
                )
            # data, not parameters: rebuilt from DataInfo, kept out of checkpoints
            self.register_buffer("track_features", features, persistent=False)
        feature_dim = self.track_features.shape[1] if self.use_features else 0
        self.context = ContextEncoder(info.categories, config.context_embedding_dim) if config.use_context else None
        self.encoder_dim = feature_dim + (self.context.dim if self.context is not None else 0)
        self.decoder_dim = feature_dim

    def encoder(self, batch: dict) -> torch.Tensor | None:
        parts = []
        if self.use_features:
            parts.append(self.track_features[batch["in_tracks"].masked_fill(~batch["in_mask"], PAD_ID)])
        if self.context is not None:
            parts.append(self.context(batch))
        return torch.cat(parts, dim=-1) if parts else None  # (B, 10, encoder_dim)

    def decoder(self, tokens: torch.Tensor) -> torch.Tensor | None:
        return self.track_features[tokens] if self.use_features else None  # (B, T, decoder_dim)


class InputEmbedding(nn.Module):
    """Track embedding (optionally initialised from pre-trained vectors) + SessionFeatures.

    ``encoder(batch, task)`` -> (B, 10, encoder_dim); ``decoder(tokens)`` -> (B, T, decoder_dim).
    """

    def __init__(self, config: CommonConfig, info: DataInfo, pretrained: np.ndarray | None = None):
        super().__init__()
        self.skip_padding = config.skip_padding
        self.track_dropout = config.track_dropout
        self.tracks = nn.Embedding(info.vocab_size, config.embedding_dim, padding_idx=PAD_ID)
        if pretrained is not None:
            pretrained = torch.as_tensor(np.asarray(pretrained), dtype=torch.float32)
            if tuple(pretrained.shape) != (info.vocab_size, config.embedding_dim):
                raise ValueError(
                    f"pre-trained track vectors have shape {tuple(pretrained.shape)}, the model needs "
                    f"({info.vocab_size}, {config.embedding_dim}): set embedding_dim to the vectors' size"
                )
            with torch.no_grad():
                self.tracks.weight.copy_(pretrained)
                self.tracks.weight[PAD_ID].zero_()
        self.features = SessionFeatures(config, info)
        self.dropout = nn.Dropout(config.dropout)
        self.encoder_dim = config.embedding_dim + self.features.encoder_dim
        self.decoder_dim = config.embedding_dim + self.features.decoder_dim

    def encoder(self, batch: dict, task: str) -> torch.Tensor:
        tokens = encoder_tokens(batch, task, self.skip_padding)
        if self.training:
            tokens = drop_tracks(tokens, self.track_dropout)
        x = self.tracks(tokens)  # (B, 10, E)
        extra = self.features.encoder(batch)
        if extra is not None:
            x = torch.cat([x, extra.to(x.dtype)], dim=-1)
        return self.dropout(x)

    def decoder(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.tracks(drop_tracks(tokens, self.track_dropout) if self.training else tokens)  # (B, T, E)
        extra = self.features.decoder(tokens)
        if extra is not None:
            x = torch.cat([x, extra.to(x.dtype)], dim=-1)
        return self.dropout(x)
