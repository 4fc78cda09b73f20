"""Reference word alignments of an evaluation set, built once and cached by their inputs.

The statistical aligner is trained on the training pairs plus the evaluation pairs (aligners are
unsupervised: more text gives better tables, and the evaluation pairs must be in it to be
aligned well), in both directions, and the evaluation pairs' links are symmetrised
(grow-diag-final-and). Words are words.tokenize tokens.

Backends:
  ibm2     the numpy aligner of aligner.py (default, no extra dependency); its tables are kept, so a
           model's own translations are aligned with them directly
  eflomal  eflomal (`pip install -e ".[align]"`, compiles a small C extension); a model's
           translations are aligned by re-running it on the training pairs plus those pairs

Cache: `<cache_dir>/align-<key>/`, key = sha1 of the aligner version, backend, settings,
heuristic, languages and the text of the training and evaluation pairs:
  links.txt              symmetrised links of the evaluation pairs (Pharaoh "src-tgt", 0-based)
  forward.txt backward.txt   the two directions' links, same format
  src.words tgt.words    the word tokens, one sentence per line, space-separated
  meta.json              sizes, time, sanity figures (directions' agreement, links per sentence)
  aligner/               the ibm2 tables
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from attnmt.alignment.aligner import AlignerSettings, StatisticalAligner
from attnmt.alignment.links import Link, Reference, alignment_scores, read_pharaoh, write_pharaoh
from attnmt.alignment.symmetrize import symmetrize
from attnmt.alignment.words import tokenize
from attnmt.permissions import publish_permissions
from attnmt.errors import ConfigError

log = logging.getLogger("attnmt.alignment")
VERSION = 1  # bump when tokenisation or the aligner changes what a cached alignment holds
BACKENDS = ("ibm2", "eflomal")


def _digest(lines: Sequence[str]) -> str:
    sha = hashlib.sha1()
    for line in lines:
        sha.update(line.encode("utf-8"))
        sha.update(b"\n")
    return sha.hexdigest()


def _tokenized(lines: Sequence[str], lang: str) -> list[list[str]]:
    return [tokenize(line, lang) for line in lines]


def _eflomal_directions(src: list[list[str]], tgt: list[list[str]], count: int) -> tuple[list[set[Link]], list[set[Link]]]:
    """eflomal on all pairs -> both directions' links of the last `count` pairs, as (source, target)."""
    try:
        import eflomal
    except ImportError:
        raise ConfigError("--alignment-backend eflomal: eflomal is not installed (pip install -e \".[align]\")") from None
    kept = [k for k in range(len(src)) if src[k] and tgt[k]]
    with tempfile.TemporaryDirectory(prefix="attnmt-eflomal-") as tmp:
        fwd, rev = Path(tmp) / "fwd", Path(tmp) / "rev"
        eflomal.Aligner().align([" ".join(src[k]).lower() + "\n" for k in kept], [" ".join(tgt[k]).lower() + "\n" for k in kept],
                                links_filename_fwd=str(fwd), links_filename_rev=str(rev), quiet=True)
        found = dict(zip(kept, zip(read_pharaoh(fwd), read_pharaoh(rev))))
    start = len(src) - count
    pairs = [found.get(k, (frozenset(), frozenset())) for k in range(start, len(src))]
    return [set(f) for f, _ in pairs], [set(b) for _, b in pairs]


@dataclass
class ReferenceAlignments:
    """Word tokens and symmetrised links of an evaluation set (same order as its lines)."""

    folder: Path
    src_words: list[list[str]]
    tgt_words: list[list[str]]
    links: list[frozenset[Link]]
    meta: dict[str, Any]
    cache_hit: bool
    _train: tuple[list[str], list[str]] | None = field(default=None, repr=False)

    @property
    def references(self) -> list[Reference]:
        return [Reference.of(links) for links in self.links]

    def align(self, src_lines: Sequence[str], tgt_lines: Sequence[str]) -> tuple[list[list[str]], list[list[str]], list[set[Link]]]:
        """Align other pairs with this set's aligner (a model's translations of the sources)
        -> (source words, target words, symmetrised links)."""
        src = _tokenized(src_lines, self.meta["src_lang"])
        tgt = _tokenized(tgt_lines, self.meta["tgt_lang"])
        heuristic = self.meta["heuristic"]
        if self.meta["backend"] == "ibm2":
            return src, tgt, StatisticalAligner.load(self.folder / "aligner").align(src, tgt, heuristic)
        if self._train is None:
            raise RuntimeError("this eflomal alignment was loaded without its training text")
        train_src, train_tgt = (_tokenized(lines, lang) for lines, lang in zip(self._train, (self.meta["src_lang"], self.meta["tgt_lang"])))
        forward, backward = _eflomal_directions(train_src + src, train_tgt + tgt, len(src))
        return src, tgt, [symmetrize(f, b, heuristic) for f, b in zip(forward, backward)]


def reference_alignments(
    train_src: Sequence[str], train_tgt: Sequence[str], eval_src: Sequence[str], eval_tgt: Sequence[str],
    src_lang: str, tgt_lang: str, cache_dir: str | Path, backend: str = "ibm2",
    settings: AlignerSettings | None = None, heuristic: str = "grow-diag-final-and",
) -> ReferenceAlignments:
    """The cached reference alignments of (eval_src, eval_tgt), built when missing (see module doc)."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown alignment backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if len(train_src) != len(train_tgt) or len(eval_src) != len(eval_tgt):
        raise ConfigError("the source and target lines of the alignment corpus are not aligned")
    settings = settings or AlignerSettings()
    blob = json.dumps({"version": VERSION, "backend": backend, "settings": asdict(settings) if backend == "ibm2" else None,
                       "heuristic": heuristic, "langs": [src_lang, tgt_lang],
                       "train": [_digest(train_src), _digest(train_tgt)], "eval": [_digest(eval_src), _digest(eval_tgt)]},
                      sort_keys=True)
    folder = Path(cache_dir) / f"align-{hashlib.sha1(blob.encode()).hexdigest()[:12]}"
    train = (list(train_src), list(train_tgt)) if backend == "eflomal" else None
    if (folder / "meta.json").is_file():
        return _load(folder, True, train)

    started, cpu_started = time.perf_counter(), time.process_time()
    src, tgt = _tokenized(train_src, src_lang) + _tokenized(eval_src, src_lang), _tokenized(train_tgt, tgt_lang) + _tokenized(eval_tgt, tgt_lang)
    count = len(eval_src)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=_made(folder.parent)))
    if backend == "ibm2":
        kept = [k for k in range(len(src)) if src[k] and tgt[k]]
        aligner = StatisticalAligner(settings).fit([src[k] for k in kept], [tgt[k] for k in kept])
        aligner.save(tmp / "aligner")
        forward, backward = aligner.align_directions(src[-count:] if count else [], tgt[-count:] if count else [])
    else:
        forward, backward = _eflomal_directions(src, tgt, count)
    links = [symmetrize(f, b, heuristic) for f, b in zip(forward, backward)]
    seconds = time.perf_counter() - started
    agreement = alignment_scores(forward, [Reference.of(b) for b in backward])
    meta = {
        "version": VERSION, "backend": backend, "heuristic": heuristic, "src_lang": src_lang, "tgt_lang": tgt_lang,
        "settings": asdict(settings) if backend == "ibm2" else None,
        "train_pairs": len(train_src), "eval_pairs": count, "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu_started,  # this process only (eflomal runs in a subprocess)
        "links_per_sentence": sum(map(len, links)) / max(count, 1),
        "words_per_sentence": {"source": sum(map(len, src[-count:])) / max(count, 1) if count else 0,
                               "target": sum(map(len, tgt[-count:])) / max(count, 1) if count else 0},
        "forward_vs_backward": agreement,  # AER of one direction against the other: how much they agree
    }
    write_pharaoh(tmp / "links.txt", links)
    write_pharaoh(tmp / "forward.txt", forward)
    write_pharaoh(tmp / "backward.txt", backward)
    for name, sents in (("src.words", src[-count:] if count else []), ("tgt.words", tgt[-count:] if count else [])):
        (tmp / name).write_text("".join(" ".join(words) + "\n" for words in sents), encoding="utf-8")
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    publish_permissions(tmp)  # mkdtemp made it 0700: the umask decides, as for the other data caches
    try:
        os.rename(tmp, folder)
    except OSError:  # another process finished the same alignment first: use that one
        shutil.rmtree(tmp, ignore_errors=True)
        return _load(folder, True, train)
    log.info("reference alignments of %d pairs built in %.1f s (%s, %s) -> %s", count, seconds, backend, heuristic, folder)
    return _load(folder, False, train)


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _load(folder: Path, cache_hit: bool, train) -> ReferenceAlignments:
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    words = [[line.split() for line in (folder / name).read_text(encoding="utf-8").splitlines()] for name in ("src.words", "tgt.words")]
    return ReferenceAlignments(folder, words[0], words[1], read_pharaoh(folder / "links.txt"), meta, cache_hit, train)


def corpus_alignments(corpus, split: str, cache_dir: str | Path, backend: str = "ibm2",
                      heuristic: str = "grow-diag-final-and", eval_lines: tuple[Sequence[str], Sequence[str]] | None = None,
                      ) -> ReferenceAlignments:
    """Reference alignments of one split of a corpus (attnmt.data.corpus.Corpus), the aligner
    trained on its training split plus that split; `eval_lines` replaces the split's own lines
    (a custom --src/--ref pair aligned with the run's training text)."""
    from attnmt.data.corpus import read_lines

    train_src, train_tgt = (read_lines(path) for path in corpus.files(corpus.train_split))
    if eval_lines is None:
        eval_lines = tuple(read_lines(path) for path in corpus.files(split))  # type: ignore[assignment]
    if split == corpus.train_split and eval_lines is not None:
        train_src, train_tgt = [], []  # the split is the training text itself
    return reference_alignments(train_src, train_tgt, eval_lines[0], eval_lines[1], corpus.src_lang, corpus.tgt_lang,
                                cache_dir, backend, heuristic=heuristic)
