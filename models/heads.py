"""Decoder states -> logits and losses: the 2-way skip head (with its wide context term) and the
track head over the vocabulary (full or sampled softmax), each position weighted as the config says."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from data_pipeline.schema import FIRST_TRACK_ID, UNK_ID
from data_pipeline.tasks import label_key
from models.config import CommonConfig


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
    return batch[label_key(task)]


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
    AA = (1/n) sum_i A(i) L(i) by (1/n) (1 + sum_{i=j+1..n} 1/i) (one error in
    five costs 0.457 at position 1, 0.200 at position 5: models.metrics). The weights
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
