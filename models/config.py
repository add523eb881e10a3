"""The fields every model config shares (``CommonConfig``) and the options searched for every family.

A family's config (``LSTMConfig``, ``TransformerConfig`` ...) subclasses
``CommonConfig`` and adds its own fields. Field names are the search-space
names and the names in Tune's results; ``COMMON_SEARCH_SPACE`` is searched for
every family besides its own space (``models/registry.py``), with the paper's
values (``COMMON_PAPER_VALUES``) in its paper configuration.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    # skip task with use_context: add a logistic-regression ("wide") term per position on first-half summaries
    # (last and mean skip_1/2/3, not_skipped, pauses, seeks, shuffle, premium; repeated tracks; the session's
    # last track), fitted before the first epoch (models.heads.WideSkipContext)
    wide_context: bool = True
    # ... with one-hot reason_end, reason_start and context_type of this many last input tracks (0: none)
    wide_last_tracks: int = 1
    # ... and this L2 penalty on each position's deviation from the weights shared by all positions
    wide_position_l2: float = 1e-2
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
        if self.wide_last_tracks < 0 or self.wide_position_l2 < 0:
            raise ValueError(f"{type(self).__name__}: wide_last_tracks and wide_position_l2 must be 0 or more")
        for name in ("lr", "batch_size", "embedding_dim", "num_negatives"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{type(self).__name__}.{name} = {getattr(self, name)}: must be positive")
