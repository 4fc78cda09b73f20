"""A statistical word aligner in numpy: IBM Model 1, then a diagonal-favouring IBM Model 2.

Each direction generates the words f of one side from the words e of the other side (plus NULL):
every f_j picks one e_i (or NULL) and is drawn from the translation table t(f | e).

* IBM Model 1 (`ibm1_iterations` EM passes): every position is equally likely; learns t.
* IBM Model 2 with fast_align's reparameterisation (Dyer et al. 2013; `ibm2_iterations` passes):
  p(a_j = NULL) = p0, p(a_j = i) = (1 - p0) exp(-λ |i/n - j/m|) / Z_j for source position i of n
  and target position j of m (1-based), so links near the diagonal are preferred. The tension λ
  is re-fitted before every pass (the value among λ·{1/2, 1/√2, 1, √2, 2} with the highest data
  likelihood under the current t, starting from 4).
* Viterbi links: a_j = argmax_i t(f_j | e_i) p(a_j = i); NULL = unaligned.

Both directions are trained (source -> target and target -> source) and their links combined by
symmetrize.symmetrize (grow-diag-final-and by default). Words are lower-cased for the statistics.

All of EM is vectorised over one flat array of (sentence, target position, source position)
candidates: with Multi30k's 30k pairs (~13 words a side) that is ~5.6M candidates per direction,
and one EM pass is a handful of np.bincount calls (a few hundred ms on one core).

A fitted aligner can align pairs it was not trained on (a model's translations): unseen word
pairs get t = `floor`. `save` / `load` keep the tables, pruned at t < `prune`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from attnmt.alignment.links import Link
from attnmt.alignment.symmetrize import symmetrize

log = logging.getLogger("attnmt.alignment")
NULL = 0  # id of the NULL word in every vocabulary; real words start at 1


@dataclass(frozen=True)
class AlignerSettings:
    ibm1_iterations: int = 5
    ibm2_iterations: int = 5
    null_probability: float = 0.08  # p0, fast_align's default
    dirichlet_alpha: float | None = 0.01  # variational Bayes M-step (fast_align -v); None = plain EM
    tension: float = 4.0  # starting λ (fast_align's default)
    fit_tension: bool = True
    lowercase: bool = True
    prune: float = 1e-4  # t below this is not saved
    floor: float = 1e-7  # t of a word pair the tables do not hold


def _digamma(values: np.ndarray) -> np.ndarray:
    import torch

    return torch.special.digamma(torch.from_numpy(np.asarray(values, dtype=np.float64))).numpy()


class _Candidates:
    """Every (group = target word of a sentence, source position) candidate, flattened."""

    def __init__(self, e_sents: Sequence[np.ndarray], f_sents: Sequence[np.ndarray]) -> None:
        n = np.array([len(e) for e in e_sents], dtype=np.int64)
        m = np.array([len(f) for f in f_sents], dtype=np.int64)
        self.sentence_of_group = np.repeat(np.arange(len(n)), m)
        group_n = n[self.sentence_of_group]  # source length of each group
        sizes = group_n + 1  # + NULL
        self.groups = int(m.sum())
        self.group_start = (np.cumsum(sizes) - sizes).astype(np.int64)
        self.group = np.repeat(np.arange(self.groups, dtype=np.int64), sizes)
        self.i = (np.arange(int(sizes.sum()), dtype=np.int64) - np.repeat(self.group_start, sizes))  # 0 = NULL
        sentence_group_start = np.cumsum(m) - m
        j = np.arange(self.groups) - np.repeat(sentence_group_start, m) + 1  # 1-based target position
        e_flat = np.concatenate([np.asarray(e, dtype=np.int64) for e in e_sents]) if len(e_sents) else np.zeros(0, np.int64)
        e_start = (np.cumsum(n) - n).astype(np.int64)
        source_index = np.repeat(e_start[self.sentence_of_group], sizes) + self.i - 1
        self.e = np.where(self.i > 0, e_flat[np.clip(source_index, 0, max(len(e_flat) - 1, 0))] if len(e_flat) else 0, NULL)
        f_flat = np.concatenate([np.asarray(f, dtype=np.int64) for f in f_sents]) if len(f_sents) else np.zeros(0, np.int64)
        self.f = np.repeat(f_flat, sizes)
        n_of = np.repeat(group_n, sizes).astype(np.float64)
        self.distance = np.abs(self.i / np.maximum(n_of, 1) - np.repeat(j / np.maximum(m[self.sentence_of_group], 1), sizes))
        self.is_null = self.i == 0
        self.source_length = group_n

    def prior(self, tension: float, null_probability: float) -> np.ndarray:
        weight = np.where(self.is_null, 0.0, np.exp(-tension * self.distance))
        z = np.bincount(self.group, weight, minlength=self.groups)
        return np.where(self.is_null, null_probability,
                        (1 - null_probability) * weight / np.maximum(z[self.group], 1e-300)).astype(np.float64)

    def viterbi(self, scores: np.ndarray) -> np.ndarray:
        """Best source position (0 = NULL) of every group."""
        best = np.maximum.reduceat(scores, self.group_start) if len(scores) else np.zeros(0)
        hits = np.flatnonzero(scores >= best[self.group])
        _, first = np.unique(self.group[hits], return_index=True)
        return self.i[hits[first]]


class _Direction:
    """t(f | e) of one direction, as sorted keys e * f_vocab + f with their probabilities."""

    def __init__(self, f_vocab: int, keys: np.ndarray, probs: np.ndarray, tension: float) -> None:
        self.f_vocab, self.keys, self.probs, self.tension = f_vocab, keys, probs, tension

    def lookup(self, e: np.ndarray, f: np.ndarray, floor: float) -> np.ndarray:
        keys = e * self.f_vocab + f
        where = np.clip(np.searchsorted(self.keys, keys), 0, max(len(self.keys) - 1, 0))
        found = (self.keys[where] == keys) & (e >= 0) & (f >= 0) if len(self.keys) else np.zeros(len(keys), bool)
        return np.where(found, self.probs[where] if len(self.keys) else 0.0, floor)


def _train_direction(e_sents, f_sents, f_vocab: int, settings: AlignerSettings) -> tuple[_Direction, _Candidates]:
    cands = _Candidates(e_sents, f_sents)
    keys, pair = np.unique(cands.e * f_vocab + cands.f, return_inverse=True)
    pair = pair.astype(np.int64)
    pair_e = keys // f_vocab
    t = np.ones(len(keys), dtype=np.float64)
    tension = settings.tension

    def em_step(prior: np.ndarray | None) -> float:
        nonlocal t
        scores = t[pair] if prior is None else t[pair] * prior
        norm = np.bincount(cands.group, scores, minlength=cands.groups)
        posterior = scores / norm[cands.group]
        counts = np.bincount(pair, posterior, minlength=len(keys))
        alpha = settings.dirichlet_alpha
        if alpha:  # variational Bayes with a sparse Dirichlet prior (fast_align -v): fewer garbage links of rare words
            totals = np.bincount(pair_e, counts + alpha)
            t = np.exp(_digamma(counts + alpha) - _digamma(totals)[pair_e])
        else:
            t = counts / np.bincount(pair_e, counts)[pair_e]
        return float(np.log(norm).sum())

    def likelihood(lam: float) -> float:
        scores = t[pair] * cands.prior(lam, settings.null_probability)
        return float(np.log(np.bincount(cands.group, scores, minlength=cands.groups)).sum())

    for _ in range(settings.ibm1_iterations):
        em_step(None)
    for _ in range(settings.ibm2_iterations):
        if settings.fit_tension:
            tension = max((tension * k for k in (0.5, 2 ** -0.5, 1.0, 2 ** 0.5, 2.0)), key=likelihood)
        em_step(cands.prior(tension, settings.null_probability))
    return _Direction(f_vocab, keys, t.astype(np.float32), tension), cands


class StatisticalAligner:
    """fit(src word lists, tgt word lists) then align(...) -> symmetrised links per pair."""

    def __init__(self, settings: AlignerSettings | None = None) -> None:
        self.settings = settings or AlignerSettings()
        self.vocab: tuple[dict[str, int], dict[str, int]] = ({}, {})  # source words, target words
        self.forward: _Direction | None = None  # f = target words, e = source words
        self.backward: _Direction | None = None  # f = source words, e = target words
        self.seconds: float | None = None

    # ---------------------------------------------------------------- words -> ids
    def _ids(self, sents: Sequence[Sequence[str]], side: int, grow: bool) -> list[np.ndarray]:
        vocab = self.vocab[side]
        out = []
        for words in sents:
            ids = []
            for word in words:
                key = word.lower() if self.settings.lowercase else word
                if key not in vocab and grow:
                    vocab[key] = len(vocab) + 1
                ids.append(vocab.get(key, -1))
            out.append(np.array(ids, dtype=np.int64))
        return out

    def fit(self, src_sents: Sequence[Sequence[str]], tgt_sents: Sequence[Sequence[str]]) -> "StatisticalAligner":
        if len(src_sents) != len(tgt_sents):
            raise ValueError(f"{len(src_sents)} source but {len(tgt_sents)} target sentences")
        started = time.perf_counter()
        src, tgt = self._ids(src_sents, 0, True), self._ids(tgt_sents, 1, True)
        self.forward, _ = _train_direction(src, tgt, len(self.vocab[1]) + 1, self.settings)
        self.backward, _ = _train_direction(tgt, src, len(self.vocab[0]) + 1, self.settings)
        self.seconds = time.perf_counter() - started
        log.info("aligner fitted on %d pairs in %.1f s (tension %.2f / %.2f)", len(src), self.seconds,
                 self.forward.tension, self.backward.tension)
        return self

    def _viterbi(self, model: _Direction, e_sents, f_sents) -> list[list[int]]:
        cands = _Candidates(e_sents, f_sents)
        scores = model.lookup(cands.e, cands.f, self.settings.floor) * cands.prior(model.tension, self.settings.null_probability)
        best = cands.viterbi(scores)
        per_sentence: list[list[int]] = [[] for _ in e_sents]
        for sentence, position in zip(cands.sentence_of_group, best):
            per_sentence[sentence].append(int(position))
        return per_sentence

    def align_directions(self, src_sents, tgt_sents) -> tuple[list[set[Link]], list[set[Link]]]:
        """Viterbi links of each direction as (source, target) pairs -> (forward, backward)."""
        if self.forward is None or self.backward is None:
            raise RuntimeError("fit (or load) the aligner first")
        src, tgt = self._ids(src_sents, 0, False), self._ids(tgt_sents, 1, False)
        forward = [{(i - 1, j) for j, i in enumerate(row) if i > 0} for row in self._viterbi(self.forward, src, tgt)]
        backward = [{(j, i - 1) for j, i in enumerate(row) if i > 0} for row in self._viterbi(self.backward, tgt, src)]
        return forward, backward

    def align(self, src_sents, tgt_sents, heuristic: str = "grow-diag-final-and") -> list[set[Link]]:
        forward, backward = self.align_directions(src_sents, tgt_sents)
        return [symmetrize(f, b, heuristic) for f, b in zip(forward, backward)]

    # ---------------------------------------------------------------- files
    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for name, model in (("forward", self.forward), ("backward", self.backward)):
            keep = model.probs >= self.settings.prune
            arrays[f"{name}_keys"], arrays[f"{name}_probs"] = model.keys[keep], model.probs[keep]
        np.savez_compressed(folder / "tables.npz", **arrays)
        meta = {"settings": asdict(self.settings), "source_vocab": list(self.vocab[0]), "target_vocab": list(self.vocab[1]),
                "tension": {"forward": self.forward.tension, "backward": self.backward.tension}, "fit_seconds": self.seconds}
        (folder / "aligner.json").write_text(json.dumps(meta), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> "StatisticalAligner":
        folder = Path(folder)
        meta = json.loads((folder / "aligner.json").read_text(encoding="utf-8"))
        aligner = cls(AlignerSettings(**meta["settings"]))
        aligner.vocab = ({w: i + 1 for i, w in enumerate(meta["source_vocab"])},
                         {w: i + 1 for i, w in enumerate(meta["target_vocab"])})
        arrays = np.load(folder / "tables.npz")
        aligner.forward = _Direction(len(aligner.vocab[1]) + 1, arrays["forward_keys"], arrays["forward_probs"],
                                     meta["tension"]["forward"])
        aligner.backward = _Direction(len(aligner.vocab[0]) + 1, arrays["backward_keys"], arrays["backward_probs"],
                                      meta["tension"]["backward"])
        aligner.seconds = meta.get("fit_seconds")
        return aligner
