"""Greedy and beam search (search.py) on the three real model families, shrunk to tiny sizes.

Untrained models rarely emit EOS, so most tests wrap a model in `EosControl`: the same real
model with its EOS logit rewritten (both in forward and in step), either made competitive
(hypotheses end at assorted lengths) or forcing EOS at a chosen length per sentence.
"""

from __future__ import annotations

import functools
import itertools
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.nn import functional as F

from attnmt.data.vocab import BOS_ID, EOS_ID, PAD_ID, padding_mask
from attnmt.models.seq2seq import Seq2Seq
from attnmt.search import Hypothesis, beam_search, decode_batch, greedy, length_penalty, max_lengths

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
VOCAB = 19
TINY = {
    "bahdanau": dict(embedding_size=16, encoder_hidden_size=8, hidden_size=16, attention_size=16, readout_size=16, dropout=0.0),
    "luong": dict(embedding_size=16, encoder_hidden_size=8, hidden_size=16, attention_size=16, dropout=0.0),
    # init=pytorch: the EOS-controlled beam tests were tuned on this model's logits (the search, not the init, is under test)
    "transformer": dict(encoder_layers=1, decoder_layers=2, d_model=16, heads=2, ff_size=32, dropout=0.0, init="pytorch"),
}
FAMILIES = list(TINY)
FORCE = 1e4  # EOS logit offset that makes EOS (im)possible without infinities


@functools.cache
def model_config(family: str) -> DictConfig:
    """configs/model/<family>.yaml composed by Hydra, shrunk to the TINY sizes."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        composed = compose(overrides=[f"+model={family}"]).model
    return OmegaConf.merge(composed, TINY[family])


def build_model(family: str, vocab: int = VOCAB, seed: int = 0) -> torch.nn.Module:
    config = model_config(family)
    torch.manual_seed(seed)
    return instantiate(config, src_vocab_size=vocab, tgt_vocab_size=vocab, shared_vocab=True).eval()


@pytest.fixture(scope="module", params=FAMILIES)
def model(request: pytest.FixtureRequest) -> torch.nn.Module:
    return build_model(request.param)


class EosControl:
    """A real model with its EOS logit rewritten (in forward and step alike).

    Default: EOS logit = the best other logit + a fixed pseudo-random amount drawn per (output
    position, previous token + source length), so EOS wins now and then and sentences end at
    assorted lengths.
    With `eos_at` [B] set: EOS impossible before output position eos_at[i] and certain there.
    """

    def __init__(self, inner: Any, eos_at: torch.Tensor | None = None, seed: int = 0) -> None:
        self.inner, self.eos_at = inner, eos_at
        self.src_vocab_size, self.tgt_vocab_size = inner.src_vocab_size, inner.tgt_vocab_size
        self.rows_per_step: list[int] = []  # hypotheses the search fed to each step call
        generator = torch.Generator().manual_seed(seed)
        self.eos_margin = torch.randn(64, inner.tgt_vocab_size, generator=generator) * 1.5 - 1.5  # [position, key]

    def _adjust(
        self,
        logits: torch.Tensor,
        previous: torch.Tensor,
        position: torch.Tensor,
        src_len: torch.Tensor,
        eos_at: torch.Tensor | None,
    ) -> torch.Tensor:
        """logits [B, T, V], previous tokens and positions [B, T], src_len [B] -> logits with a new EOS column."""
        adjusted = logits.clone()
        if eos_at is None:
            best_other = logits.index_fill(-1, torch.tensor([EOS_ID]), float("-inf")).amax(-1)
            key = (previous + src_len[:, None]) % logits.size(-1)
            adjusted[..., EOS_ID] = best_other + self.eos_margin[position, key]
        else:
            target = eos_at[:, None]
            adjusted[..., EOS_ID] += torch.where(position < target, -FORCE, torch.where(position == target, FORCE, 0.0))
        return adjusted

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> Any:
        return self.inner.encode(src, src_mask)

    def forward(self, src, src_mask, tgt_in, need_weights=False):
        logits, weights = self.inner(src, src_mask, tgt_in, need_weights=need_weights)
        position = torch.arange(tgt_in.size(1)).expand(tgt_in.shape)
        return self._adjust(logits, tgt_in, position, src_mask.sum(1), self.eos_at), weights

    __call__ = forward

    def init_state(self, memory: Any, src_mask: torch.Tensor) -> Any:
        return (self.inner.init_state(memory, src_mask), 0, src_mask.sum(1), self.eos_at)

    def step(self, tokens, state, need_weights=True):
        inner_state, position, src_len, eos_at = state
        self.rows_per_step.append(tokens.size(0))
        logprobs, inner_state, weights = self.inner.step(tokens, inner_state, need_weights)
        here = torch.full((tokens.size(0), 1), position)
        logprobs = self._adjust(logprobs[:, None], tokens[:, None], here, src_len, eos_at)[:, 0].log_softmax(-1)
        return logprobs, (inner_state, position + 1, src_len, eos_at), weights

    def reorder_state(self, state, index, beams=None):
        inner_state, position, src_len, eos_at = state
        eos_at = None if eos_at is None else eos_at[index]
        return (self.inner.reorder_state(inner_state, index, beams), position, src_len[index], eos_at)

    def row(self, i: int) -> "EosControl":
        """The same controller for sentence i alone."""
        alone = EosControl(self.inner, None if self.eos_at is None else self.eos_at[i : i + 1])
        alone.eos_margin = self.eos_margin
        return alone


def make_src(lengths: list[int], seed: int = 0, vocab: int = VOCAB) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded random sources [B, S] ending in EOS (lengths count the EOS) and their mask."""
    generator = torch.Generator().manual_seed(seed)
    src = torch.full((len(lengths), max(lengths)), PAD_ID)
    for i, length in enumerate(lengths):
        src[i, : length - 1] = torch.randint(4, vocab, (length - 1,), generator=generator)
        src[i, length - 1] = EOS_ID
    return src, padding_mask(src)


def teacher_forced(model: Any, src_row: torch.Tensor, output_ids: list[int]) -> tuple[float, torch.Tensor]:
    """Log-probability of output_ids given one source row [1, S] (padding kept), and the
    cross-attention [L, H, T, S] of that pass, recomputed independently of the search."""
    target = torch.tensor([output_ids])
    tgt_in = torch.cat([torch.tensor([[BOS_ID]]), target[:, :-1]], dim=1)
    with torch.no_grad():
        logits, weights = model(src_row, padding_mask(src_row), tgt_in, need_weights=True)
    logprob = F.log_softmax(logits.float(), dim=-1).gather(2, target[..., None]).sum()
    return float(logprob), weights[0]


def all_logprobs(model: Any, src_row: torch.Tensor, outputs: list[list[int]]) -> list[float]:
    """Teacher-forced log-probabilities of many outputs (each ending in EOS or not) for one
    source row [1, S], in one padded batch."""
    longest = max(len(ids) for ids in outputs)
    target = torch.tensor([ids + [PAD_ID] * (longest - len(ids)) for ids in outputs])  # [N, T]
    tgt_in = torch.cat([torch.full((len(outputs), 1), BOS_ID), target[:, :-1]], dim=1)
    sources = src_row.expand(len(outputs), -1)
    with torch.no_grad():
        logits, _ = model(sources, padding_mask(sources), tgt_in)
    picked = F.log_softmax(logits.float(), dim=-1).gather(2, target[..., None]).squeeze(2)  # [N, T]
    return picked.masked_fill(~padding_mask(target), 0.0).sum(1).tolist()


def check_against_teacher_forcing(model: Any, src: torch.Tensor, found: list[list[Hypothesis]], alpha: float) -> None:
    for i, hypotheses in enumerate(found):
        real = padding_mask(src[i])
        for hypothesis in hypotheses:
            logprob, weights = teacher_forced(model, src[i : i + 1], hypothesis.output_ids)
            assert hypothesis.logprob == pytest.approx(logprob, abs=1e-4)
            expected_score = logprob / length_penalty(len(hypothesis.output_ids), alpha)
            assert hypothesis.score == pytest.approx(expected_score, abs=1e-4)
            assert hypothesis.attention is not None
            torch.testing.assert_close(hypothesis.attention, weights[..., real], atol=1e-4, rtol=1e-4)
            row_sums = hypothesis.attention.sum(-1)
            torch.testing.assert_close(row_sums, torch.ones_like(row_sums), atol=1e-5, rtol=0)


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_beam_size_one_equals_greedy(model: torch.nn.Module, alpha: float) -> None:
    src, src_mask = make_src([7, 3, 9, 5, 6, 2])
    controlled = EosControl(model)
    by_greedy = greedy(controlled, src, src_mask, max_len_a=1.0, max_len_b=3)
    by_beam = beam_search(controlled, src, src_mask, beam_size=1, alpha=alpha, max_len_a=1.0, max_len_b=3)
    assert any(h.finished for h in by_greedy) and any(len(h.tokens) > 1 for h in by_greedy), "EOS shift too weak/strong"
    for g, (b,) in zip(by_greedy, by_beam):
        assert (g.tokens, g.finished) == (b.tokens, b.finished)
        assert g.logprob == pytest.approx(b.logprob, abs=1e-5)
        assert g.score == g.logprob
        assert b.score == pytest.approx(b.logprob / length_penalty(len(b.output_ids), alpha), abs=1e-5)
        torch.testing.assert_close(g.attention, b.attention)
    via_decode = decode_batch(controlled, src, src_mask, beam_size=1, alpha=0.6, max_len_a=1.0, max_len_b=3)
    assert [h.tokens for (h,) in via_decode] == [h.tokens for h in by_greedy]


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_beam_scores_equal_teacher_forced_logprobs(model: torch.nn.Module, alpha: float) -> None:
    src, src_mask = make_src([6, 2, 8, 4], seed=1)
    controlled = EosControl(model)
    found = beam_search(controlled, src, src_mask, beam_size=4, alpha=alpha, max_len_a=1.0, max_len_b=2, n_best=3)
    assert all(len(hypotheses) == 3 for hypotheses in found)
    assert any(h.finished for hs in found for h in hs) and any(not h.finished for hs in found for h in hs)
    for hypotheses in found:
        scores = [h.score for h in hypotheses]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h.output_ids) for h in hypotheses}) == 3, "n-best must be distinct"
    check_against_teacher_forcing(controlled, src, found, alpha)


def test_greedy_scores_equal_teacher_forced_logprobs(model: torch.nn.Module) -> None:
    src, src_mask = make_src([5, 9, 3], seed=2)
    found = greedy(model, src, src_mask, max_len_a=0.5, max_len_b=2)  # untrained: mostly cut at max length
    check_against_teacher_forcing(model, src, [[h] for h in found], alpha=0.0)


@pytest.mark.parametrize("beam_size, n_best", [(1, 1), (3, 2)])
def test_finished_sentence_does_not_stop_the_others(model: torch.nn.Module, beam_size: int, n_best: int) -> None:
    src, src_mask = make_src([3, 12, 2, 7], seed=3)
    eos_at = torch.tensor([1, 15, 0, 6])  # EOS forced after 1, 15, 0 and 6 output tokens
    controlled = EosControl(model, eos_at=eos_at)
    settings = dict(beam_size=beam_size, alpha=0.6, n_best=n_best, max_len_a=1.0, max_len_b=5)
    found = decode_batch(controlled, src, src_mask, **settings)
    for i, hypotheses in enumerate(found):
        assert hypotheses[0].finished and len(hypotheses[0].tokens) == int(eos_at[i]), (i, hypotheses[0])
        # The same sentence decoded on its own, without padding (real models ignore padding).
        length = int(src_mask[i].sum())
        alone = decode_batch(controlled.row(i), src[i : i + 1, :length], src_mask[i : i + 1, :length], **settings)[0]
        assert [h.output_ids for h in alone] == [h.output_ids for h in hypotheses]
        assert [h.logprob for h in alone] == pytest.approx([h.logprob for h in hypotheses], abs=1e-4)


def reference_greedy(model: Any, src_row: torch.Tensor, limit: int) -> tuple[list[int], float]:
    """Greedy search the slow way, independent of step/state/reorder_state: one sentence [1, S],
    a full teacher-forced pass over the whole prefix for every output id -> (output_ids, logprob)."""
    prefix, logprob = [BOS_ID], 0.0
    while len(prefix) <= limit:
        with torch.no_grad():
            logits, _ = model(src_row, padding_mask(src_row), torch.tensor([prefix]))
        logprobs = F.log_softmax(logits[0, -1].float(), dim=-1)
        chosen = int(logprobs.index_fill(0, torch.tensor([PAD_ID, BOS_ID]), float("-inf")).argmax())
        logprob += float(logprobs[chosen])
        prefix.append(chosen)
        if chosen == EOS_ID:
            break
    return prefix[1:], logprob


@pytest.mark.parametrize("need_attention", [True, False])
@pytest.mark.parametrize("check_every", [1, 3])
def test_greedy_dropping_finished_sentences_equals_the_reference(
    model: torch.nn.Module, need_attention: bool, check_every: int
) -> None:
    """Sentences end after 1, 9, 0, 4 and 6 ids (or at their limit), so the batch shrinks several times."""
    src, src_mask = make_src([3, 12, 2, 7, 9], seed=7)
    controlled = EosControl(model, eos_at=torch.tensor([1, 9, 0, 4, 6]))
    limits = max_lengths(src_mask, 1.0, 2)
    found = greedy(controlled, src, src_mask, 1.0, 2, need_attention=need_attention, check_every=check_every)
    assert len(set(controlled.rows_per_step)) > 2, "the batch should shrink more than once"
    for i, hypothesis in enumerate(found):
        expected_ids, expected_logprob = reference_greedy(controlled.row(i), src[i : i + 1], int(limits[i]))
        assert hypothesis.output_ids == expected_ids, i
        assert hypothesis.logprob == pytest.approx(expected_logprob, abs=1e-4)
        if need_attention:
            check_against_teacher_forcing(controlled.row(i), src[i : i + 1], [[hypothesis]], alpha=0.0)
        else:
            assert hypothesis.attention is None


@pytest.mark.parametrize("n_best", [1, 2])
def test_beam_search_dropping_finished_sentences_changes_nothing(model: torch.nn.Module, n_best: int) -> None:
    """Checking every step drops each sentence as soon as it stops; a check interval longer than
    any output never drops one (the finished sentences ride along masked, as before): same results."""
    src, src_mask = make_src([6, 2, 11, 4, 8, 3], seed=8)
    controlled = EosControl(model, seed=1)  # a seed where every family's sentences stop at several steps
    settings = dict(beam_size=3, alpha=0.6, max_len_a=1.0, max_len_b=3, n_best=n_best)
    kept = beam_search(controlled, src, src_mask, **settings, check_every=10_000)
    for need_attention in (True, False):
        dropped = beam_search(controlled, src, src_mask, **settings, check_every=1, need_attention=need_attention)
        for mine, theirs in zip(dropped, kept):
            assert [h.output_ids for h in mine] == [h.output_ids for h in theirs]
            assert [h.logprob for h in mine] == pytest.approx([h.logprob for h in theirs], abs=1e-5)
            for h, t in zip(mine, theirs):
                if need_attention:
                    torch.testing.assert_close(h.attention, t.attention, atol=1e-5, rtol=1e-5)
                else:
                    assert h.attention is None
    assert controlled.rows_per_step[:2] == [6, 6 * 3], "one hypothesis per sentence first, then 3"
    shrinking = sorted(set(controlled.rows_per_step[1:]), reverse=True)
    assert len(shrinking) > 2, f"the batch should shrink more than once: {shrinking}"


def test_maximum_length_per_sentence(model: torch.nn.Module) -> None:
    lengths = [2, 9, 5]
    src, src_mask = make_src(lengths, seed=4)
    never = EosControl(model, eos_at=torch.tensor([100, 100, 100]))  # EOS impossible within the limit
    limits = max_lengths(src_mask, 1.5, 1)
    assert limits.tolist() == [math.floor(1.5 * n + 1) for n in lengths]
    for hypotheses in [[h] for h in greedy(never, src, src_mask, 1.5, 1)], beam_search(never, src, src_mask, 3, 0.6, 1.5, 1, 2):
        for hypothesis_list, limit in zip(hypotheses, limits.tolist()):
            for hypothesis in hypothesis_list:
                assert not hypothesis.finished and len(hypothesis.tokens) == limit
                assert hypothesis.attention.shape[-2] == limit
                assert PAD_ID not in hypothesis.tokens and BOS_ID not in hypothesis.tokens


def test_beam_search_is_exact_when_the_beam_holds_everything() -> None:
    """Vocabulary of 6 (PAD, UNK, BOS, EOS, 4, 5): UNK/4/5/EOS can be generated, so with at most
    3 outputs there are 13 finished + 27 cut-off outputs; a beam of 40 keeps them all, so with
    alpha=0 (exact stopping) its n-best must be the exhaustive n-best."""
    vocab, limit = 6, 3
    for family in FAMILIES:
        inner = build_model(family, vocab=vocab, seed=5)
        src, src_mask = make_src([4, 2], seed=5, vocab=vocab)
        controlled = EosControl(inner)
        found = beam_search(controlled, src, src_mask, beam_size=40, alpha=0.0, max_len_a=0.0, max_len_b=limit, n_best=5)
        choices = [1, 4, 5]
        outputs = [list(p) + [EOS_ID] for n in range(limit) for p in itertools.product(choices, repeat=n)]
        outputs += [list(p) for p in itertools.product(choices, repeat=limit)]
        for i, hypotheses in enumerate(found):
            scored = sorted(zip(all_logprobs(controlled, src[i : i + 1], outputs), outputs), reverse=True)
            assert [h.output_ids for h in hypotheses] == [ids for _, ids in scored[:5]], family
            assert [h.logprob for h in hypotheses] == pytest.approx([lp for lp, _ in scored[:5]], abs=1e-4)


def test_without_attention_and_bad_arguments(model: torch.nn.Module) -> None:
    src, src_mask = make_src([4, 6], seed=6)
    controlled = EosControl(model)
    with_weights = beam_search(controlled, src, src_mask, beam_size=2, alpha=0.6, max_len_a=1.5, max_len_b=4)
    without = beam_search(controlled, src, src_mask, beam_size=2, alpha=0.6, max_len_a=1.5, max_len_b=4, need_attention=False)
    assert [h.tokens for (h,) in with_weights] == [h.tokens for (h,) in without]
    assert all(h.attention is None for (h,) in without)
    assert all(h.attention is None for h in greedy(controlled, src, src_mask, 1.5, 10, need_attention=False))
    with pytest.raises(ValueError, match="n_best"):
        beam_search(controlled, src, src_mask, beam_size=2, alpha=0.6, max_len_a=1.5, max_len_b=10, n_best=3)


def test_protocol_and_length_penalty() -> None:
    assert isinstance(build_model("transformer"), Seq2Seq)
    assert length_penalty(7, 0.0) == 1.0
    assert length_penalty(1, 0.6) == pytest.approx(1.0)
    assert length_penalty(13, 1.0) == pytest.approx(3.0)
