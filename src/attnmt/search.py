"""Greedy and beam search on the Seq2Seq protocol (encode / init_state / step / reorder_state).

Shapes: B sentences, K beams, V target vocabulary, L attention layers, H heads, S source length,
T output length. Every search works on whole batches on the model's device and only leaves it
to check, every step on the CPU and every few steps elsewhere (`check_every`), which sentences
have finished, to drop them from the batch (the model then computes only the unfinished ones)
and to stop when none is left, and at the end to build the results.

A returned `Hypothesis` holds the output *without* BOS and EOS in `tokens` (ready to detokenise);
`finished` says whether the model ended it with EOS (otherwise it hit the maximum length), and
`output_ids` puts the EOS back: these are the T ids the model was scored on, the same thing a
Batch's `tgt_out` holds. `attention` has one row per output id and one column per real source
token: [L, H, T, S_real].

Maximum output length per sentence (EOS included): floor(max_len_a * source_length + max_len_b),
source_length counting the real source tokens (EOS included), at least 1. The searches take every
setting explicitly: the defaults are declared once, in inference.DecodeSettings.
PAD and BOS are never generated: they can't be meaningful outputs, so they are masked out of
the choice (the scores of the chosen ids are the model's unchanged log-probabilities).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from attnmt.data.vocab import BOS_ID, EOS_ID, PAD_ID
from attnmt.models.seq2seq import Seq2Seq

NEVER_GENERATED = (PAD_ID, BOS_ID)


@dataclass
class Hypothesis:
    """One decoded output.

    tokens:    output ids without BOS/EOS
    score:     the ranking score: logprob / length_penalty(len(output_ids), alpha) (greedy: logprob)
    logprob:   sum of the model's log-probabilities of output_ids
    finished:  True when the model emitted EOS, False when cut at the maximum length
    attention: [L, H, T, S] cross-attention, T = len(output_ids), S = real source tokens; None
               when the search ran with need_attention=False
    """

    tokens: list[int]
    score: float
    logprob: float
    finished: bool = True
    attention: torch.Tensor | None = field(default=None, repr=False)

    @property
    def output_ids(self) -> list[int]:
        """The ids the model produced, EOS included when it ended the output ([T])."""
        return self.tokens + [EOS_ID] if self.finished else list(self.tokens)


def length_penalty(length: int | torch.Tensor, alpha: float) -> float | torch.Tensor:
    """GNMT length penalty ((5 + length) / 6) ** alpha; alpha = 0 gives 1 (no normalisation)."""
    return ((5 + length) / 6) ** alpha


def max_lengths(src_mask: torch.Tensor, max_len_a: float, max_len_b: float) -> torch.Tensor:
    """src_mask [B, S] bool -> [B] long: most output ids (EOS included) allowed per sentence."""
    src_lengths = src_mask.sum(dim=1).to(torch.float64)
    return (max_len_a * src_lengths + max_len_b).floor().long().clamp(min=1)


def _block_special(logprobs: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
    """logprobs [..., V], blocked ids [n] -> the same tensor with those ids at -inf so no search
    picks them (in place: a step's log-probabilities belong to the search, and a copy of [N, V]
    per step is measurable)."""
    return logprobs.index_fill_(-1, blocked, float("-inf"))


def _check_interval(check_every: int | None, device: torch.device) -> int:
    """Steps between host-side checks: every step on the CPU, where a check costs nothing and drops
    finished sentences soonest; every 4 elsewhere, where each check waits for the device."""
    if check_every is not None:
        return check_every
    return 1 if device.type == "cpu" else 4


def _unfinished(stopped: torch.Tensor, rows: int) -> torch.Tensor | None:
    """stopped [A] bool -> positions of the unfinished rows [A'], or None when none has finished
    (nothing to drop). One host sync."""
    keep = stopped.logical_not().nonzero().squeeze(1)
    return None if keep.size(0) == rows else keep


@torch.inference_mode()
def greedy(
    model: Seq2Seq,
    src: torch.Tensor,
    src_mask: torch.Tensor,
    max_len_a: float,
    max_len_b: float,
    need_attention: bool = True,
    check_every: int | None = None,
) -> list[Hypothesis]:
    """Pick the most probable id at every step, for the whole batch at once.

    src [B, S] long, src_mask [B, S] bool -> one Hypothesis per sentence (score = logprob).
    Every `check_every` steps (default: _check_interval) the sentences that have finished leave
    the batch; until then a finished sentence is fed EOS and its outputs are ignored.
    """
    batch_size, device = src.size(0), src.device
    check_every = _check_interval(check_every, device)
    limits = max_lengths(src_mask, max_len_a, max_len_b)  # [B]
    state = model.init_state(model.encode(src, src_mask), src_mask)

    blocked = torch.tensor(NEVER_GENERATED, device=device)
    rows = torch.arange(batch_size, device=device)  # [A] the sentence each decoded row belongs to
    previous = torch.full((batch_size,), BOS_ID, dtype=torch.long, device=device)  # [A]
    stopped = torch.zeros(batch_size, dtype=torch.bool, device=device)  # [A]
    logprob = torch.zeros(batch_size, dtype=torch.float32, device=device)  # per sentence [B]
    lengths = torch.zeros(batch_size, dtype=torch.long, device=device)  # [B]
    ended_by_eos = torch.zeros(batch_size, dtype=torch.bool, device=device)  # [B]
    history: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []  # per step: rows, ids [A], attention [A, L, H, S]

    for step in range(int(limits.max())):
        step_logprobs, state, attention = model.step(previous, state, need_weights=need_attention)  # [A, V]
        chosen = _block_special(step_logprobs, blocked).argmax(dim=-1)  # [A]
        active = ~stopped
        logprob.index_add_(0, rows, torch.where(active, step_logprobs.gather(1, chosen[:, None]).squeeze(1), 0.0))
        chosen = torch.where(active, chosen, EOS_ID)
        lengths.index_add_(0, rows, active.long())
        ended = active & chosen.eq(EOS_ID)
        ended_by_eos.index_put_((rows,), ended_by_eos[rows] | ended)
        stopped = stopped | ended | limits[rows].le(step + 1)
        history.append((rows, chosen, attention))
        previous = chosen
        if (step + 1) % check_every == 0:
            keep = _unfinished(stopped, rows.size(0))
            if keep is not None:
                if keep.size(0) == 0:
                    break
                state = model.reorder_state(state, keep)
                rows, previous, stopped = rows[keep], previous[keep], stopped[keep]

    ids, stacked = _greedy_outputs(history, batch_size, need_attention)  # [B, T], [B, T, L, H, S]
    real_src = src_mask.cpu()
    hypotheses = []
    for i in range(batch_size):
        length, finished = int(lengths[i]), bool(ended_by_eos[i])
        tokens = ids[i, : length - int(finished)].tolist()
        attention = None
        if stacked is not None:
            attention = stacked[i, :length][..., real_src[i]].permute(1, 2, 0, 3).contiguous()  # [L, H, T, S]
        value = float(logprob[i])
        hypotheses.append(Hypothesis(tokens, value, value, finished, attention))
    return hypotheses


def _greedy_outputs(
    history: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]], batch_size: int, need_attention: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per step (rows [A], ids [A], attention [A, L, H, S]) -> ids [B, T] and attention
    [B, T, L, H, S] (or None) on the CPU; steps after a sentence left the batch hold EOS / zeros."""
    ids = torch.full((batch_size, len(history)), EOS_ID, dtype=torch.long)
    stacked = torch.zeros(batch_size, len(history), *history[0][2].shape[1:]) if need_attention else None
    step = 0
    # consecutive steps share one `rows` tensor until the batch shrinks: one copy per such run
    # (history holds every `rows` tensor, so no id is reused)
    for _, run in itertools.groupby(history, key=lambda entry: id(entry[0])):
        run = list(run)
        rows, span = run[0][0].cpu(), slice(step, step + len(run))
        ids[rows, span] = torch.stack([chosen for _, chosen, _ in run], dim=1).cpu()  # [A, run]
        if stacked is not None:
            stacked[rows, span] = torch.stack([attention for _, _, attention in run], dim=1).float().cpu()
        step += len(run)
    return ids, stacked


class _FinishedPool:
    """The n best complete hypotheses per sentence so far, as device tensors [B, N].

    A hypothesis is remembered by where its last id was chosen (step, parent beam, id); the rest
    of it is recovered by following parent pointers through the search history at the end.
    Empty slots have score -inf.
    """

    def __init__(self, batch_size: int, n_best: int, device: torch.device) -> None:
        self.n_best = n_best
        self.score = torch.full((batch_size, n_best), float("-inf"), device=device)
        self.logprob = torch.zeros(batch_size, n_best, device=device)
        self.step = torch.zeros(batch_size, n_best, dtype=torch.long, device=device)
        self.parent = torch.zeros(batch_size, n_best, dtype=torch.long, device=device)
        self.token = torch.zeros(batch_size, n_best, dtype=torch.long, device=device)
        self.finished = torch.zeros(batch_size, n_best, dtype=torch.bool, device=device)

    def add(
        self,
        rows: torch.Tensor,
        score: torch.Tensor,
        logprob: torch.Tensor,
        step: int,
        parent: torch.Tensor,
        token: torch.Tensor,
        finished: bool,
    ) -> None:
        """Offer candidates [A, C] of sentences `rows` [A] (score -inf = not a candidate); keep
        the n best of each, sorted."""
        names = ("score", "logprob", "step", "parent", "token", "finished")
        step_ids = torch.full_like(token, step)
        offered = (score, logprob, step_ids, parent, token, torch.full_like(token, finished, dtype=torch.bool))
        merged = {name: torch.cat([getattr(self, name)[rows], new], dim=1) for name, new in zip(names, offered)}
        best = merged["score"].topk(self.n_best, dim=1).indices  # [A, N], sorted best first
        for name in names:
            getattr(self, name)[rows] = merged[name].gather(1, best)


@torch.inference_mode()
def beam_search(
    model: Seq2Seq,
    src: torch.Tensor,
    src_mask: torch.Tensor,
    beam_size: int,
    alpha: float,
    max_len_a: float,
    max_len_b: float,
    n_best: int = 1,
    need_attention: bool = True,
    check_every: int | None = None,
) -> list[list[Hypothesis]]:
    """Batched beam search: B sentences x K beams go through one model.step call per step.

    src [B, S] long, src_mask [B, S] bool -> per sentence its n_best hypotheses, best first,
    ranked by score = logprob / length_penalty(T, alpha).

    Each step proposes the 2K best (beam, id) extensions of every sentence. Those ending in EOS
    and ranked within the first K become complete hypotheses; the K best others stay open, so the
    beam never shrinks. Every sentence stops on its own: when its n-th best complete hypothesis
    scores at least as well as its best open beam at the open beam's current length (exact for
    alpha = 0, since log-probabilities only fall; the usual approximation otherwise), or at its
    maximum length, where the open beams compete as unfinished hypotheses. Stopped sentences leave
    the batch every `check_every` steps (default: _check_interval). The first step runs one
    hypothesis per sentence (K copies of BOS would give K equal rows) and fans out to K beams.
    beam_size = 1 gives exactly `greedy`'s outputs and log-probabilities.
    """
    if not 1 <= n_best <= beam_size:
        raise ValueError(f"need 1 <= n_best <= beam_size, got n_best={n_best}, beam_size={beam_size}")
    batch_size, beams, device = src.size(0), beam_size, src.device
    check_every = _check_interval(check_every, device)
    limits = max_lengths(src_mask, max_len_a, max_len_b)  # [B]
    state = model.init_state(model.encode(src, src_mask), src_mask)

    rows = torch.arange(batch_size, device=device)  # [A] the sentence each group of beams decodes
    width = 1  # hypotheses per sentence in `state`: 1 for the first step, K after
    beam_logprob = torch.zeros(batch_size, width, device=device)  # [A, W]
    previous = torch.full((batch_size,), BOS_ID, dtype=torch.long, device=device)  # [A*W]
    done = torch.zeros(batch_size, dtype=torch.bool, device=device)  # [A]
    pool = _FinishedPool(batch_size, n_best, device)
    rank = torch.arange(2 * beams, device=device)
    blocked = torch.tensor(NEVER_GENERATED, device=device)
    history = _BeamHistory(batch_size, beams, need_attention)

    for step in range(int(limits.max())):
        step_logprobs, state, attention = model.step(previous, state, need_weights=need_attention)  # [A*W, V], [A*W, L, H, S]
        active, vocab = rows.size(0), step_logprobs.size(-1)
        extended = beam_logprob[:, :, None] + _block_special(step_logprobs, blocked).view(active, width, vocab)
        cand_logprob, cand_index = _top(extended.view(active, width * vocab), 2 * beams)  # [A, 2K]
        cand_parent, cand_token = cand_index // vocab, cand_index % vocab
        penalty = length_penalty(step + 1, alpha)
        alive = ~done[:, None]

        is_eos = cand_token.eq(EOS_ID)
        completes = is_eos & rank.lt(beams) & alive & cand_logprob.isfinite()
        completed = torch.where(completes, cand_logprob / penalty, float("-inf"))
        pool.add(rows, completed, cand_logprob, step, cand_parent, cand_token, True)

        # The K best non-EOS candidates, still in score order: sort by (is EOS, rank).
        keep = (is_eos.long() * 2 * beams + rank).argsort(dim=1)[:, :beams]  # [A, K]
        open_logprob = cand_logprob.gather(1, keep)
        open_token, open_parent = cand_token.gather(1, keep), cand_parent.gather(1, keep)

        at_limit = limits[rows].eq(step + 1)[:, None] & alive  # [A, 1]
        cut = at_limit & open_logprob.isfinite()
        cut_off = torch.where(cut, open_logprob / penalty, float("-inf"))
        pool.add(rows, cut_off, open_logprob, step, open_parent, open_token, False)

        can_improve = (open_logprob[:, 0] / penalty) > pool.score[rows, -1]  # -inf pool slot: any open beam can
        done = done | at_limit.squeeze(1) | ~can_improve
        beam_logprob = open_logprob.masked_fill(done[:, None], float("-inf"))
        history.add(rows, open_token, open_parent, attention)

        parent_rows = open_parent + torch.arange(active, device=device)[:, None] * width  # [A, K] rows of `state`
        if (step + 1) % check_every == 0:
            unfinished = _unfinished(done, active)
            if unfinished is not None:
                if unfinished.size(0) == 0:
                    break
                rows, done, beam_logprob = rows[unfinished], done[unfinished], beam_logprob[unfinished]
                parent_rows, open_token = parent_rows[unfinished], open_token[unfinished]
        state = model.reorder_state(state, parent_rows.view(-1), beams=beams)
        previous, width = open_token.view(-1), beams

    return _collect(pool, history, src_mask)


def _top(scores: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scores [A, C] -> the `count` best (values, indices) [A, count], best first; when C < count
    (a first step over a vocabulary smaller than 2K) the missing ones are -inf at index 0, dead
    candidates like those of any -inf beam."""
    available = scores.size(1)
    if available >= count:
        return scores.topk(count, dim=1)
    values, indices = F.pad(scores, (0, count - available), value=float("-inf")).topk(count, dim=1)
    return values, indices.masked_fill(indices >= available, 0)


class _BeamHistory:
    """What every step chose, for following parent pointers back at the end: per step ids and
    parent beams [B, K] and cross-attention [B, K, L, H, S] of every sentence (rows of sentences
    that had already left the batch stay zero: no pooled hypothesis reaches them)."""

    def __init__(self, batch_size: int, beams: int, need_attention: bool) -> None:
        self.batch_size, self.beams, self.need_attention = batch_size, beams, need_attention
        self.tokens: list[torch.Tensor] = []
        self.parents: list[torch.Tensor] = []
        self.attentions: list[torch.Tensor] = []

    def add(self, rows: torch.Tensor, tokens: torch.Tensor, parents: torch.Tensor, attention: torch.Tensor | None) -> None:
        """rows [A] sentences, tokens / parents [A, K], attention [A*W, L, H, S] or None (W = 1 at
        the first step, whose one hypothesis per sentence is the parent of all K)."""
        self.tokens.append(self._full(rows, tokens))
        self.parents.append(self._full(rows, parents))
        if self.need_attention:
            attention = attention.view(rows.size(0), -1, *attention.shape[1:])  # [A, W, L, H, S]
            self.attentions.append(self._full(rows, attention.expand(-1, self.beams, *attention.shape[2:])))

    def _full(self, rows: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """values [A, K, ...] of sentences `rows` -> [B, K, ...], zeros for the others."""
        if rows.size(0) == self.batch_size:
            return values
        return values.new_zeros(self.batch_size, *values.shape[1:]).index_copy_(0, rows, values)


def _collect(pool: _FinishedPool, history: _BeamHistory, src_mask: torch.Tensor) -> list[list[Hypothesis]]:
    """Follow parent pointers back from every pooled hypothesis to rebuild its ids and attention."""
    batch_size = pool.score.size(0)
    valid = pool.score.isfinite().cpu()  # [B, N]
    sentence = torch.arange(batch_size)[:, None].expand_as(valid)[valid]  # [M]
    last_step = pool.step.cpu()[valid]
    beam = pool.parent.cpu()[valid]
    rows = torch.arange(len(sentence))
    out_len = int(last_step.max()) + 1 if len(rows) else 0

    tokens = torch.stack(history.tokens).cpu()  # [steps, B, K]
    parents = torch.stack(history.parents).cpu()  # [steps, B, K]
    weights_history = torch.stack(history.attentions).float().cpu() if history.need_attention else None  # [steps, B, K, L, H, S]
    ids = torch.full((len(rows), out_len), PAD_ID, dtype=torch.long)
    ids[rows, last_step] = pool.token.cpu()[valid]
    weights = None
    if weights_history is not None:
        weights = weights_history.new_zeros(len(rows), out_len, *weights_history.shape[3:])  # [M, T, L, H, S]
        weights[rows, last_step] = weights_history[last_step, sentence, beam]
    for step in range(out_len - 2, -1, -1):
        inside = last_step.gt(step)  # hypotheses long enough to have an id at this step
        ids[:, step] = torch.where(inside, tokens[step, sentence, beam], ids[:, step])
        parent = parents[step, sentence, beam]
        if weights is not None:
            weights[inside, step] = weights_history[step, sentence, parent][inside]
        beam = torch.where(inside, parent, beam)

    scores, logprobs, finished = pool.score.cpu()[valid], pool.logprob.cpu()[valid], pool.finished.cpu()[valid]
    real_src = src_mask.cpu()
    results: list[list[Hypothesis]] = [[] for _ in range(batch_size)]
    for m in range(len(rows)):
        i, length, ended = int(sentence[m]), int(last_step[m]) + 1, bool(finished[m])
        attention = None
        if weights is not None:
            attention = weights[m, :length][..., real_src[i]].permute(1, 2, 0, 3).contiguous()  # [L, H, T, S]
        results[i].append(
            Hypothesis(ids[m, : length - int(ended)].tolist(), float(scores[m]), float(logprobs[m]), ended, attention)
        )
    return results  # pool order is best first


def decode_batch(
    model: Seq2Seq,
    src: torch.Tensor,
    src_mask: torch.Tensor,
    beam_size: int,
    alpha: float,
    max_len_a: float,
    max_len_b: float,
    n_best: int = 1,
    need_attention: bool = True,
) -> list[list[Hypothesis]]:
    """Decode src [B, S] with greedy search (beam_size=1, n_best=1) or beam search.

    -> per sentence a list of n_best hypotheses, best first. With beam_size=1, `alpha` is
    ignored and score = logprob (the two searches give the same outputs then).
    """
    if beam_size == 1 and n_best == 1:
        found = greedy(model, src, src_mask, max_len_a, max_len_b, need_attention=need_attention)
        return [[hypothesis] for hypothesis in found]
    return beam_search(model, src, src_mask, beam_size, alpha, max_len_a, max_len_b, n_best, need_attention)
