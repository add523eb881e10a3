"""Decoder states -> logits and losses: the 2-way skip head (with its wide context term) and the
track head over the vocabulary (full or sampled softmax), each position weighted as the config says."""

from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from data_pipeline.schema import FIRST_TRACK_ID, UNK_ID
from data_pipeline.tasks import label_key
from models.config import CommonConfig
from models.data import DataInfo
from models.inputs import category_count

# The wide term is fitted on at most this many training sessions (its features are ~100 floats a session).
WIDE_FIT_SESSIONS = 200_000


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
    """A logistic-regression ("wide") skip term per second-half position on first-half summaries.

    Deep sequence models can learn "the user skipped the last two tracks" from
    the context inputs, but with little data a direct path generalises better
    (wide & deep, Cheng et al. 2016). Its features, per session
    (``summaries``): the last value, the value before it (skip_2 only) and the
    first-half mean of each 0/1 interaction column and of skip_2, log seek
    counts, both half lengths, and one-hot codes of the categorical columns
    (``CATEGORICAL``: why the track ended, why it started, the context) of the
    last `last_tracks` input tracks; per second-half position (``flags``): the
    track was already played in the first half, it is the session's last track.

    The logit of position t is ``summary @ (shared + per_position[t]) +
    bias[t] + flags @ position_flags``: one weight vector for every position
    plus each position's own deviation, which the L2 penalty (``penalty``:
    `position_l2` on the deviations, `shared_l2` on the shared weights) pulls
    towards the shared one. Skip rate x position is in it; later positions,
    with fewer sessions, borrow strength from the earlier ones.

    The term is fitted as a logistic regression (``fit``, L-BFGS on the train
    split) before the deep part's first epoch (``OutputHead.fit_wide``), then
    trained with the rest: Adam at a deep model's learning rate moves it far too
    little in a few epochs to reach what a logistic regression on the same
    features reaches alone (BENCHMARKS.md, "Real MSSD sample").
    """

    FLAGS = (
        "skip_2", "skip_1", "skip_3", "not_skipped", "context_switch", "no_pause_before_play",
        "short_pause_before_play", "long_pause_before_play", "is_shuffle", "premium",
    )
    COUNTS = ("n_seekfwd", "n_seekback")
    CATEGORICAL = ("reason_end", "reason_start", "context_type")
    num_summaries = 2 * len(FLAGS) + 2 * len(COUNTS) + 1 + 2  # last/mean of each, skip_2 before last, lengths

    def __init__(self, positions: int = 10, categories: dict | None = None, last_tracks: int = 0,
                 position_l2: float = 1e-2, shared_l2: float = 1e-4):
        super().__init__()
        if last_tracks and categories is None:
            raise ValueError("WideSkipContext: last_tracks > 0 needs the dataset's categories (DataInfo.categories)")
        self.positions = positions
        self.last_tracks = last_tracks
        self.position_l2, self.shared_l2 = position_l2, shared_l2
        self.category_counts = {c: category_count(c, categories) for c in self.CATEGORICAL} if last_tracks else {}
        self.num_features = self.num_summaries + last_tracks * sum(self.category_counts.values())
        # all zeros: no term at all until fitted, so the deep part alone is unchanged at init
        self.shared = nn.Parameter(torch.zeros(self.num_features, 2))
        self.per_position = nn.Parameter(torch.zeros(positions, self.num_features, 2))
        self.bias = nn.Parameter(torch.zeros(positions, 2))
        self.position_flags = nn.Parameter(torch.zeros(2, 2))  # (already played, last track) -> 2 logits each

    def summaries(self, batch: dict) -> torch.Tensor:
        """(B, num_features) per-session features of the first half."""
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
        one_hots = []
        for back in range(self.last_tracks):  # the last input track, then the one before it ...
            index = batch["n_in"] - 1 - back
            there = (index >= 0).float()[:, None]  # a first half shorter than that has no such track: all zeros
            for name, count in self.category_counts.items():
                codes = batch[f"in_{name}"][rows, index.clamp(min=0)].clamp(0, count - 1)
                one_hots.append(F.one_hot(codes, count).float() * there)
        return torch.cat([torch.stack(parts, dim=-1), *one_hots], dim=-1)

    def flags(self, batch: dict) -> torch.Tensor:
        """(B, T, 2) 0/1: the track was already played in the first half; it is the session's last track."""
        out, first = batch["out_tracks"], batch["in_tracks"]
        known = (out >= FIRST_TRACK_ID) & (out != UNK_ID) & batch["out_mask"]
        played = ((out[:, :, None] == first[:, None, :]) & batch["in_mask"][:, None, :]).any(-1) & known
        position = torch.arange(out.shape[1], device=out.device)[None, :]
        last = (position == batch["n_out"][:, None] - 1) & batch["out_mask"]
        return torch.stack([played, last], dim=-1).float()

    def logits_of(self, summaries: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
        """(B, T, 2) logits from ``summaries`` (B, num_features) and ``flags`` (B, T, 2)."""
        per_position = torch.einsum("bd,tdk->btk", summaries, self.per_position[: flags.shape[1]])
        return (summaries @ self.shared)[:, None] + per_position + self.bias[: flags.shape[1]] + flags @ self.position_flags

    def forward(self, batch: dict) -> torch.Tensor:
        return self.logits_of(self.summaries(batch), self.flags(batch))  # (B, T, 2)

    def penalty(self) -> torch.Tensor:
        """The L2 penalty added to the skip loss: deviations from the shared weights, and the shared weights."""
        return self.position_l2 * self.per_position.pow(2).sum() + self.shared_l2 * self.shared.pow(2).sum()

    def fit(self, summaries: torch.Tensor, flags: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
            max_iter: int = 200) -> float:
        """Fit every parameter by L-BFGS to the weighted cross-entropy plus ``penalty`` (a convex problem);
        returns the final objective. Rows: sessions (summaries (N, D), flags (N, T, 2), labels and weights (N, T))."""
        optimizer = torch.optim.LBFGS(self.parameters(), lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")
        keep = weights > 0
        labels, weights = labels[keep], weights[keep]

        def objective():
            optimizer.zero_grad()
            losses = F.cross_entropy(self.logits_of(summaries, flags)[keep], labels, reduction="none")
            loss = weighted_mean(losses, weights) + self.penalty()
            loss.backward()
            return loss

        return float(optimizer.step(objective).detach())


class OutputHead(nn.Module):
    """Decoder states -> logits and loss.

    skip: a 2-way softmax per position (plus ``WideSkipContext`` when the config
    has ``use_context`` and ``wide_context``, fitted by ``fit_wide`` before the
    first epoch, and its L2 penalty in the training loss). seq: a softmax over the whole
    vocabulary (reserved ids masked), trained with full cross-entropy or, when
    ``loss == "sampled_softmax"``, with a sampled softmax over `num_negatives`
    shared log-uniform negatives with the log-Q correction (Jean et al. 2015;
    TensorFlow's ``sampled_softmax_loss``); then training returns no logits.
    Evaluation (``model.eval()``) always scores the full vocabulary. Positions
    are weighted as ``config.position_weights`` says.
    """

    def __init__(self, hidden_dim: int, task: str, info: DataInfo, config: CommonConfig):
        super().__init__()
        self.task = task
        self.vocab_size = vocab_size = info.vocab_size
        self.sampled = task == "seq" and config.loss == "sampled_softmax"
        self.num_negatives = min(config.num_negatives, vocab_size - FIRST_TRACK_ID)
        self.position_weights = config.position_weights
        self.proj = nn.Linear(hidden_dim, 2 if task == "skip" else vocab_size)
        self.wide = None
        if task == "skip" and config.use_context and config.wide_context:
            self.wide = WideSkipContext(categories=info.categories, last_tracks=config.wide_last_tracks,
                                        position_l2=config.wide_position_l2)

    def logits(self, hidden: torch.Tensor, batch: dict | None = None) -> torch.Tensor:
        logits = self.proj(hidden)  # (B, T, 2 or V)
        if self.wide is not None and batch is not None:
            logits = logits + self.wide(batch)[:, : logits.shape[1]].to(logits.dtype)
        return mask_reserved_(logits) if self.task == "seq" else logits

    def fit_wide(self, batches: Iterable[dict], max_sessions: int = WIDE_FIT_SESSIONS) -> None:
        """Fit the wide term (when there is one) to the first `max_sessions` sessions of `batches`
        (torch task batches of the train split), weighted as the loss weights positions."""
        if self.wide is None:
            return
        parts, sessions = [], 0
        with torch.no_grad():
            for batch in batches:
                mask = loss_mask(batch, self.task)
                parts.append((self.wide.summaries(batch), self.wide.flags(batch), targets_of(batch, self.task),
                              self.weights(batch, mask)))
                sessions += len(mask)
                if sessions >= max_sessions:
                    break
        if parts:
            self.wide.fit(*(torch.cat(column)[:max_sessions] for column in zip(*parts)))

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
        loss = weighted_mean(losses.view_as(targets), weights)
        if self.wide is not None and self.training:
            loss = loss + self.wide.penalty()  # the objective the wide term was fitted to (evaluation: the plain loss)
        return logits, loss

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
