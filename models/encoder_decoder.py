"""The paper's encoder-decoder for both tasks (figure 1), and how it decodes the second half.

A model file (``lstm.py``, ``transformer.py`` ...) subclasses ``EncoderDecoder``
and writes only ``encode`` and ``decode``; the skeleton does teacher forcing,
the skip task's given second-half tracks, and prediction: for ``seq`` greedy
decoding (the paper) or beam search, over the whole vocabulary (the head's
reserved ids are -inf, so no reserved id is ever chosen).

A session's decoding score is the sum of its log-probabilities over its real
output positions (``n_out``); positions past ``n_out`` are filled greedily at
no cost, so under the challenge protocol the beam ranks hypotheses by what is
evaluated only.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from data_pipeline.dataset import HALF_LENGTH
from data_pipeline.schema import PAD_ID
from data_pipeline.tasks import check_task
from models.config import CommonConfig
from models.data import DataInfo
from models.inputs import START_ID, shifted_targets

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


# ---------------------------------------------------------------------------
# decoding the second half (seq task)
# ---------------------------------------------------------------------------


def _next_log_probs(model, memory: dict, tokens: torch.Tensor, state: dict | None):
    """Log-probabilities (N, V) of the next track after the prefix `tokens` (N, t)."""
    if model.incremental_decoding:
        hidden, state = model.decode(memory, model.inputs.decoder(tokens[:, -1:]), state)
    else:
        hidden, state = model.decode(memory, model.inputs.decoder(tokens), None)
    logits = model.head.logits(hidden[:, -1])  # (N, V)
    return logits.float().log_softmax(-1), state


def _select(tensors: dict | None, index: torch.Tensor) -> dict | None:
    return None if tensors is None else {k: v.index_select(0, index) for k, v in tensors.items()}


@torch.no_grad()
def greedy_decode(model, batch: dict, steps: int = HALF_LENGTH) -> tuple[torch.Tensor, torch.Tensor]:
    """The most likely track at each step fed back as the next input.

    Returns (tracks (B, steps), log-probability (B,) over each session's n_out positions).
    """
    with evaluation_mode(model):
        memory = model.encode(batch)
        n_out = batch["n_out"]
        tokens = torch.full((n_out.shape[0], 1), START_ID, dtype=torch.long, device=n_out.device)
        score = torch.zeros(n_out.shape[0], device=n_out.device)
        state = None
        for t in range(steps):
            log_probs, state = _next_log_probs(model, memory, tokens, state)
            best, track = log_probs.max(-1)  # (B,)
            score = score + torch.where(t < n_out, best, torch.zeros_like(best))
            tokens = torch.cat([tokens, track[:, None]], dim=1)
        return tokens[:, 1:], score


@torch.no_grad()
def beam_search(model, batch: dict, beam_size: int, steps: int = HALF_LENGTH) -> tuple[torch.Tensor, torch.Tensor]:
    """Beam search with `beam_size` hypotheses per session.

    Returns (tracks (B, steps), log-probability (B,)). Plain beam search can
    lose the greedy path and end below it; the greedy sequence is therefore
    scored too and kept where it is better, so the result is never less likely
    than greedy decoding. ``beam_size=1`` is greedy decoding.
    """
    if beam_size <= 1:
        return greedy_decode(model, batch, steps)
    with evaluation_mode(model):
        n_out = batch["n_out"]
        device = n_out.device
        num_sessions, k = n_out.shape[0], beam_size
        repeat = torch.arange(num_sessions, device=device).repeat_interleave(k)  # (B*K,)
        memory = _select(model.encode(batch), repeat)  # beams of a session share its memory
        beam_n_out = n_out[repeat]
        tokens = torch.full((num_sessions * k, 1), START_ID, dtype=torch.long, device=device)
        scores = torch.full((num_sessions, k), float("-inf"), device=device)
        scores[:, 0] = 0.0  # one live hypothesis at the start, so the first step branches K ways
        state = None
        for t in range(steps):
            log_probs, state = _next_log_probs(model, memory, tokens, state)  # (B*K, V)
            # the K best of a session are among the K best extensions of each beam:
            # (B, K*K) candidates instead of (B, K*V), which matters at V = 100K
            per_beam = min(k, log_probs.shape[1])
            step_scores, step_tracks = log_probs.topk(per_beam, dim=1)  # (B*K, per_beam), best first
            # sessions already past n_out: extend every beam by its argmax at no cost
            done = (t >= beam_n_out)[:, None]
            free = torch.zeros_like(step_scores).index_fill_(1, torch.arange(1, per_beam, device=device), float("-inf"))
            step_scores = torch.where(done, free, step_scores)
            candidates = (scores.view(-1, 1) + step_scores).view(num_sessions, k * per_beam)
            scores, flat = candidates.topk(k, dim=1)  # (B, K)
            parent = (torch.arange(num_sessions, device=device)[:, None] * k + flat // per_beam).view(-1)  # (B*K,)
            chosen = step_tracks.view(num_sessions, k * per_beam).gather(1, flat).view(-1, 1)
            tokens = torch.cat([tokens.index_select(0, parent), chosen], dim=1)
            state = _select(state, parent)
        best_score, best = scores.max(dim=1)  # (B,)
        best_tokens = tokens.view(num_sessions, k, -1)[torch.arange(num_sessions, device=device), best, 1:]
        greedy_tokens, greedy_score = greedy_decode(model, batch, steps)
        use_greedy = greedy_score > best_score
        return (
            torch.where(use_greedy[:, None], greedy_tokens, best_tokens),
            torch.where(use_greedy, greedy_score, best_score),
        )


@torch.no_grad()
def sequence_log_prob(model, batch: dict, tracks: torch.Tensor) -> torch.Tensor:
    """Log-probability (B,) the model gives `tracks` (B, 10) over each session's n_out positions,
    scored by teacher forcing (one forward pass)."""
    with evaluation_mode(model):
        logits, _ = model({**batch, "out_tracks": tracks})  # (B, 10, V)
        log_probs = logits.float().log_softmax(-1).gather(-1, tracks[..., None]).squeeze(-1)  # (B, 10)
        return torch.where(batch["out_mask"], log_probs, torch.zeros_like(log_probs)).sum(-1)
