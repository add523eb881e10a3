"""What every model family shares: the data it is built for, the common config
fields, the input embedding, the output heads with their losses, and the
encoder-decoder skeleton (teacher forcing, skip padding, prediction).

A model file (``lstm.py``, ``transformer.py`` ...) subclasses
``EncoderDecoder`` and writes only ``encode`` and ``decode``; BERT, which has
no decoder, uses the same ``InputEmbedding`` pieces and ``OutputHead``.

Batch convention (see ``data_pipeline.dataset``): halves are left-aligned and
padded to 10 positions; ``in_mask`` / ``out_mask`` say which positions are
real. Padding never reaches a real position (packed RNNs, key-padding masks,
causal decoders) and never counts in a loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

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

TASKS = ("skip", "seq")
LOSSES = ("ce", "sampled_softmax")
POSITION_WEIGHTS = ("uniform", "maa")
# Searched for every family besides its own space (models/registry.py); the paper's values first
# (the search's first point), so `--fix use_context=false` etc. reproduce the paper's inputs.
COMMON_SEARCH_SPACE = {
    "use_context": ("choice", [False, True]),
    "track_dropout": ("uniform", 0.0, 0.5),
    "position_weights": ("choice", ["uniform", "maa"]),
}
COMMON_PAPER_VALUES = {"use_context": False, "track_dropout": 0.0, "position_weights": "uniform"}
START_ID = MASK_ID  # the decoder's input at step 0 (seq task): no track precedes the second half


@dataclass
class DataInfo:
    """What a model needs to know about the prepared dataset it is built for."""

    vocab_size: int
    track_features: np.ndarray | None = None  # float32 [vocab_size, F], row = track id
    categories: dict = field(default_factory=dict)  # name -> list of values, code = index
    pretrained: dict = field(default_factory=dict)  # results of ModelSpec.pretrain

    @classmethod
    def from_dataset(cls, dataset, pretrained: dict | None = None) -> "DataInfo":
        """The DataInfo of a `data_pipeline.dataset.PreparedDataset`."""
        return cls(dataset.vocab_size, dataset.track_features, dict(dataset.categories), dict(pretrained or {}))


@dataclass
class CommonConfig:
    """Fields every model config has. Family configs subclass this and add theirs.

    Field names are the search-space names and the names in Tune results.
    """

    # training knobs (read by the trainer; the paper: Adam, lr 1e-4 seq / 1e-5 skip, batch 256)
    lr: float = 1e-4
    batch_size: int = 256
    weight_decay: float = 0.0
    # inputs
    embedding_dim: int = 256
    skip_padding: bool = True  # skip task: skipped input tracks become <SKIP> (paper); False = "no skip padding" row
    use_track_features: bool = False  # concatenate the track features to every track embedding
    use_context: bool = False  # first half's interaction columns + track features of both halves (beyond the paper)
    context_embedding_dim: int = 8  # size of each categorical context column's embedding
    dropout: float = 0.2
    # training only: each input track id becomes <unk> with this probability (its features stay), so the
    # <unk> embedding is learned and rare ids are not memorised; 0 = the paper
    track_dropout: float = 0.0
    # how loss positions are weighted: "uniform" (the paper) or "maa", each position by what an error
    # there costs the session's MAA (early positions cost most; see maa_position_weights)
    position_weights: str = "uniform"
    # skip task with use_context: add a linear ("wide") term per position on first-half summaries
    # (last and mean skip_1/2/3, not_skipped, pauses, seeks, shuffle, premium; repeated tracks)
    wide_context: bool = True
    # seq-task loss: full softmax ("ce") or sampled softmax over num_negatives log-uniform negatives
    loss: str = "ce"
    num_negatives: int = 1000

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"{type(self).__name__}.loss = {self.loss!r}: choose one of {', '.join(LOSSES)}")
        if self.position_weights not in POSITION_WEIGHTS:
            raise ValueError(
                f"{type(self).__name__}.position_weights = {self.position_weights!r}: "
                f"choose one of {', '.join(POSITION_WEIGHTS)}"
            )
        for name in ("dropout", "track_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{type(self).__name__}.{name} = {getattr(self, name)}: must be in [0, 1)")
        for name in ("lr", "batch_size", "embedding_dim", "num_negatives"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{type(self).__name__}.{name} = {getattr(self, name)}: must be positive")


def train_session_tracks(dataset, max_sessions: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The train split's track ids (N, 20) int64 and lengths (N,), for pre-training.

    `dataset` is a PreparedDataset; `max_sessions` > 0 keeps only the first that many.
    """
    import pyarrow.parquet as pq

    tracks, lengths, total = [], [], 0
    for path in dataset.split_files("train"):
        table = pq.read_table(path, columns=["tracks", "length"])
        length = table.column("length").to_numpy().astype(np.int64)
        matrix = table.column("tracks").combine_chunks().flatten().to_numpy().reshape(len(length), -1)
        tracks.append(matrix.astype(np.int64))
        lengths.append(length)
        total += len(length)
        if max_sessions and total >= max_sessions:
            break
    if not tracks:
        raise ValueError(f"{dataset.root}: the train split has no sessions to pre-train on; prepare the data again")
    tracks_all, lengths_all = np.concatenate(tracks), np.concatenate(lengths)
    if max_sessions:
        tracks_all, lengths_all = tracks_all[:max_sessions], lengths_all[:max_sessions]
    return tracks_all, lengths_all


def check_task(task: str, model_name: str) -> None:
    if task not in TASKS:
        raise ValueError(f"{model_name}: unknown task {task!r}: choose one of {', '.join(TASKS)}")


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------


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


def _category_count(name: str, categories: dict) -> int:
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
            {c: nn.Embedding(_category_count(c, categories), embedding_dim) for c in self.categorical}
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


# ---------------------------------------------------------------------------
# Outputs and losses
# ---------------------------------------------------------------------------


def mask_reserved_(logits: torch.Tensor) -> torch.Tensor:
    """Make the reserved ids (pad, mask, skip, unk) impossible, in place.

    For freshly computed logits only (a Linear's output: its backward does not
    need it), so a 100K-track batch is not copied once more."""
    logits[..., :FIRST_TRACK_ID] = float("-inf")
    return logits


def weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Sum of values * weights over the sum of weights (0 when every weight is 0)."""
    weights = weights.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp(min=1e-12)


def loss_mask(batch: dict, task: str) -> torch.Tensor:
    """Positions whose target counts: real second-half positions; for `seq`, not <unk> targets,
    which no model can predict (they only occur under the challenge protocol)."""
    mask = batch["out_mask"]
    if task == "seq":
        mask = mask & (batch["out_tracks"] >= FIRST_TRACK_ID)
    return mask


def targets_of(batch: dict, task: str) -> torch.Tensor:
    return batch["out_skip_2"] if task == "skip" else batch["out_tracks"]


def log_uniform_sample(num: int, num_tracks: int, device) -> torch.Tensor:
    """`num` track ranks drawn from P(r) = log((r+2)/(r+1)) / log(N+1) (ids are numbered by play
    count, so popular tracks are drawn more often); from torch's global CPU generator."""
    u = torch.rand(num).to(device)
    ranks = torch.floor(torch.exp(u * math.log(num_tracks + 1))).long() - 1
    return ranks.clamp(0, num_tracks - 1)


def log_uniform_log_q(ranks: torch.Tensor, num_tracks: int) -> torch.Tensor:
    ranks = ranks.float()
    return torch.log(torch.log1p(1.0 / (ranks + 1.0)) / math.log(num_tracks + 1))


def maa_position_weights(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) weight of each position by what an error there costs MAA, normalised per session.

    One error at position j of an otherwise right n-position session lowers
    AA = (1/n) sum_i A(i) L(i) by (1/n) (1 + sum_{i=j+1..n} 1/i) (FACTS.md: one
    error in five costs 0.457 at position 1, 0.200 at position 5). The weights
    are those costs scaled to sum to 1 per session; padding weighs 0.
    """
    m = mask.float()
    inverse = m / torch.arange(1, mask.shape[1] + 1, device=mask.device, dtype=m.dtype)
    later = inverse.flip(1).cumsum(1).flip(1) - inverse  # sum over real i > j of 1/i
    cost = (1.0 + later) * m
    return cost / cost.sum(1, keepdim=True).clamp(min=1e-12)


class WideSkipContext(nn.Module):
    """A linear ("wide") skip term per second-half position on first-half summaries.

    Deep sequence models can learn "the user skipped the last two tracks" from
    the context inputs, but with little data a direct path generalises better
    (wide & deep, Cheng et al. 2016). Per session: the last value, the value
    before it (skip_2 only) and the first-half mean of each 0/1 interaction
    column and of skip_2, log seek counts, both half lengths; a separate linear
    map per output position, plus a term for a second-half track already
    played in the first half.
    """

    FLAGS = (
        "skip_2", "skip_1", "skip_3", "not_skipped", "context_switch", "no_pause_before_play",
        "short_pause_before_play", "long_pause_before_play", "is_shuffle", "premium",
    )
    COUNTS = ("n_seekfwd", "n_seekback")
    num_features = 2 * len(FLAGS) + 2 * len(COUNTS) + 1 + 2  # last/mean of each, skip_2 before last, lengths

    def __init__(self, positions: int = 10):
        super().__init__()
        self.positions = positions
        self.linear = nn.Linear(self.num_features, positions * 2)
        self.repeat = nn.Parameter(torch.zeros(2))
        nn.init.zeros_(self.linear.weight)  # starts as no term at all: the deep part is unchanged at init
        nn.init.zeros_(self.linear.bias)

    def summaries(self, batch: dict) -> torch.Tensor:
        mask = batch["in_mask"].float()
        n_in = batch["n_in"].clamp(min=1)
        rows = torch.arange(mask.shape[0], device=mask.device)
        last, before = n_in - 1, (n_in - 2).clamp(min=0)
        parts = []
        for name in self.FLAGS + self.COUNTS:
            x = batch[f"in_{name}"].float()
            if name in self.COUNTS:
                x = torch.log1p(x.clamp(min=0))
            parts += [x[rows, last], (x * mask).sum(1) / mask.sum(1).clamp(min=1.0)]
        skips = batch["in_skip_2"].float()
        parts.append(torch.where(n_in >= 2, skips[rows, before], skips[rows, last]))
        parts += [batch["n_in"].float() / self.positions, batch["n_out"].float() / self.positions]
        return torch.stack(parts, dim=-1)  # (B, num_features)

    def forward(self, batch: dict) -> torch.Tensor:
        summary = self.summaries(batch)
        logits = self.linear(summary).view(-1, self.positions, 2)
        out, first = batch["out_tracks"], batch["in_tracks"]
        known = (out >= FIRST_TRACK_ID) & (out != UNK_ID) & batch["out_mask"]
        played = ((out[:, :, None] == first[:, None, :]) & batch["in_mask"][:, None, :]).any(-1) & known
        return logits + played.float()[..., None] * self.repeat  # (B, T, 2)


class OutputHead(nn.Module):
    """Decoder states -> logits and loss.

    skip: a 2-way softmax per position (plus ``WideSkipContext`` when the config
    has ``use_context`` and ``wide_context``). seq: a softmax over the whole
    vocabulary (reserved ids masked), trained with full cross-entropy or, when
    ``loss == "sampled_softmax"``, with a sampled softmax over `num_negatives`
    shared log-uniform negatives with the log-Q correction (Jean et al. 2015;
    TensorFlow's ``sampled_softmax_loss``); then training returns no logits.
    Evaluation (``model.eval()``) always scores the full vocabulary. Positions
    are weighted as ``config.position_weights`` says.
    """

    def __init__(self, hidden_dim: int, task: str, vocab_size: int, config: CommonConfig):
        super().__init__()
        self.task = task
        self.vocab_size = vocab_size
        self.sampled = task == "seq" and config.loss == "sampled_softmax"
        self.num_negatives = min(config.num_negatives, vocab_size - FIRST_TRACK_ID)
        self.position_weights = config.position_weights
        self.proj = nn.Linear(hidden_dim, 2 if task == "skip" else vocab_size)
        self.wide = WideSkipContext() if task == "skip" and config.use_context and config.wide_context else None

    def logits(self, hidden: torch.Tensor, batch: dict | None = None) -> torch.Tensor:
        logits = self.proj(hidden)  # (B, T, 2 or V)
        if self.wide is not None and batch is not None:
            logits = logits + self.wide(batch)[:, : logits.shape[1]].to(logits.dtype)
        return mask_reserved_(logits) if self.task == "seq" else logits

    def weights(self, batch: dict, mask: torch.Tensor) -> torch.Tensor:
        if self.position_weights == "maa":
            return maa_position_weights(batch["out_mask"]) * mask
        return mask.float()

    def forward(self, hidden: torch.Tensor, batch: dict) -> tuple[torch.Tensor | None, torch.Tensor]:
        targets, mask = targets_of(batch, self.task), loss_mask(batch, self.task)
        weights = self.weights(batch, mask)
        if self.sampled and self.training:
            return None, self.sampled_softmax_loss(hidden, targets, mask, weights)
        logits = self.logits(hidden, batch)
        safe_targets = torch.where(mask, targets, torch.full_like(targets, FIRST_TRACK_ID if self.task == "seq" else 0))
        losses = F.cross_entropy(logits.float().flatten(0, 1), safe_targets.flatten(), reduction="none")
        return logits, weighted_mean(losses.view_as(targets), weights)

    def sampled_softmax_loss(
        self, hidden: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        num_tracks = self.vocab_size - FIRST_TRACK_ID
        h = hidden[mask]  # (N, H): only the positions that count
        t = targets[mask]  # (N,)
        if h.shape[0] == 0:
            return hidden.sum() * 0.0
        neg_ranks = log_uniform_sample(self.num_negatives, num_tracks, hidden.device)  # (K,)
        neg = neg_ranks + FIRST_TRACK_ID
        weight, bias = self.proj.weight, self.proj.bias
        true_logit = (h * weight[t]).sum(-1) + bias[t]  # (N,)
        neg_logits = h @ weight[neg].T + bias[neg]  # (N, K)
        k = float(self.num_negatives)
        true_logit = true_logit.float() - (log_uniform_log_q(t - FIRST_TRACK_ID, num_tracks) + math.log(k))
        neg_logits = neg_logits.float() - (log_uniform_log_q(neg_ranks, num_tracks) + math.log(k))
        neg_logits = neg_logits.masked_fill(neg[None, :] == t[:, None], float("-inf"))  # accidental hits
        logits = torch.cat([true_logit[:, None], neg_logits], dim=1)  # (N, 1+K)
        losses = F.cross_entropy(logits, torch.zeros_like(t), reduction="none")
        return weighted_mean(losses, weights[mask])


# ---------------------------------------------------------------------------
# Encoder-decoder skeleton
# ---------------------------------------------------------------------------


class EncoderDecoder(nn.Module):
    """The paper's encoder-decoder for both tasks (figure 1).

    Subclasses build ``self.inputs`` (InputEmbedding), ``self.head``
    (OutputHead) and write:

    - ``encode(batch) -> memory``: a dict of batch-first tensors;
    - ``decode(memory, x, state) -> (hidden (B, t, H), state)``: decoder states
      for decoder inputs ``x`` (B, t, decoder_dim). With
      ``incremental_decoding = True`` (RNNs) ``x`` may be only the newest step
      and ``state`` (a dict of batch-first tensors, or None to start from
      ``memory``) carries the rest; otherwise ``x`` is the whole prefix.
    """

    incremental_decoding = False

    def __init__(self, config: CommonConfig, task: str, info: DataInfo):
        super().__init__()
        check_task(task, type(self).__name__)
        self.config = config
        self.task = task
        self.vocab_size = info.vocab_size

    def encode(self, batch: dict) -> dict:
        raise NotImplementedError

    def decode(self, memory: dict, x: torch.Tensor, state: dict | None) -> tuple[torch.Tensor, dict | None]:
        raise NotImplementedError

    def decoder_tokens(self, batch: dict) -> torch.Tensor:
        """skip: the true second-half tracks; seq: the right-shifted targets (teacher forcing)."""
        out_tracks = batch["out_tracks"].masked_fill(~batch["out_mask"], PAD_ID)
        return out_tracks if self.task == "skip" else shifted_targets(out_tracks)

    def forward(self, batch: dict) -> tuple[torch.Tensor | None, torch.Tensor]:
        memory = self.encode(batch)
        hidden, _ = self.decode(memory, self.inputs.decoder(self.decoder_tokens(batch)), None)  # (B, 10, H)
        return self.head(hidden, batch)

    @torch.no_grad()
    def predict(self, batch: dict, beam_size: int = 1) -> torch.Tensor:
        """(B, 10): skip flags (argmax per position) or track ids (greedy, or beam search with K=beam_size)."""
        from models.decoding import beam_search, greedy_decode

        with evaluation_mode(self):
            if self.task == "skip":
                logits, _ = self.forward(batch)
                return logits.argmax(-1)
            if beam_size <= 1:
                return greedy_decode(self, batch)[0]
            return beam_search(self, batch, beam_size)[0]


class evaluation_mode:
    """`with evaluation_mode(model):` runs in eval mode (no dropout) and restores the previous mode."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        self.model.train(self.was_training)
