"""Word alignment link sets, alignment error rate, and the files they come in.

A link is (source word, target word), both 0-based. A reference alignment has sure links S and
possible links P with S ⊆ P (Och & Ney 2003); a reference that only has one kind of link (a
statistical aligner's output) has S = P. For a predicted alignment A:

    precision = |A ∩ P| / |A|        recall = |A ∩ S| / |S|
    AER       = 1 - (|A ∩ S| + |A ∩ P|) / (|A| + |S|)

Scores over a corpus pool the counts of all sentences (the usual definition), they are not a mean
of per-sentence scores.

Files: "Pharaoh" lines (`0-0 1-2 3-1`, source-target, one line per sentence; what fast_align and
eflomal write) and the HLT-NAACL 2003 shared task's `.wa` files (`sent_id src_pos tgt_pos [S|P]
[confidence]`, positions 1-based, 0 = NULL and skipped) with their text files (`<s snum=0001>
words ... </s>` per line, or plain lines).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from attnmt.errors import DataError

Link = tuple[int, int]


@dataclass
class Reference:
    """Reference links of one sentence: sure ⊆ possible (possible holds the sure links too)."""

    sure: frozenset[Link]
    possible: frozenset[Link]

    @classmethod
    def of(cls, links: Iterable[Link], possible: Iterable[Link] = ()) -> "Reference":
        sure = frozenset((int(s), int(t)) for s, t in links)
        return cls(sure, sure | frozenset((int(s), int(t)) for s, t in possible))


@dataclass
class AlignmentCounts:
    """Pooled counts over sentences -> precision, recall, AER."""

    predicted: int = 0  # |A|
    sure: int = 0  # |S|
    hit_sure: int = 0  # |A ∩ S|
    hit_possible: int = 0  # |A ∩ P|
    sentences: int = 0

    def add(self, predicted: Iterable[Link], reference: Reference) -> None:
        predicted = set(predicted)
        self.predicted += len(predicted)
        self.sure += len(reference.sure)
        self.hit_sure += len(predicted & reference.sure)
        self.hit_possible += len(predicted & reference.possible)
        self.sentences += 1

    def scores(self) -> dict[str, float]:
        """{"aer", "precision", "recall", "links_per_sentence"}; NaN where a denominator is 0."""
        nan = float("nan")
        return {
            "aer": 1.0 - (self.hit_sure + self.hit_possible) / (self.predicted + self.sure) if self.predicted + self.sure else nan,
            "precision": self.hit_possible / self.predicted if self.predicted else nan,
            "recall": self.hit_sure / self.sure if self.sure else nan,
            "links_per_sentence": self.predicted / self.sentences if self.sentences else nan,
        }


def alignment_scores(predicted: Sequence[Iterable[Link]], references: Sequence[Reference]) -> dict[str, float]:
    """Corpus-level AER / precision / recall of predicted link sets against references (same order)."""
    if len(predicted) != len(references):
        raise ValueError(f"{len(predicted)} predicted alignments but {len(references)} references")
    counts = AlignmentCounts()
    for links, reference in zip(predicted, references):
        counts.add(links, reference)
    return counts.scores()


def aer(predicted: Iterable[Link], sure: Iterable[Link], possible: Iterable[Link] = ()) -> float:
    """AER of one sentence (possible links besides the sure ones are optional)."""
    return alignment_scores([set(predicted)], [Reference.of(sure, possible)])["aer"]


# ------------------------------------------------------------------------------ files
def format_pharaoh(links: Iterable[Link]) -> str:
    return " ".join(f"{s}-{t}" for s, t in sorted(links))


def parse_pharaoh(line: str) -> frozenset[Link]:
    links = set()
    for item in line.split():
        s, _, t = item.partition("-")
        links.add((int(s), int(t)))
    return frozenset(links)


def write_pharaoh(path: str | Path, alignments: Iterable[Iterable[Link]]) -> None:
    Path(path).write_text("".join(format_pharaoh(links) + "\n" for links in alignments), encoding="utf-8")


def read_pharaoh(path: str | Path) -> list[frozenset[Link]]:
    return [parse_pharaoh(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


_SENTENCE_TAG = re.compile(r"^\s*<s\s+snum\s*=\s*\"?(\w+)\"?\s*>(.*?)</s>\s*$", re.IGNORECASE)


def read_naacl_text(path: str | Path) -> dict[str, list[str]]:
    """A NAACL 2003 text file -> {sentence id: whitespace tokens}. Lines `<s snum=0008> ... </s>`
    give their id; plain lines are numbered from 1."""
    sentences: dict[str, list[str]] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        match = _SENTENCE_TAG.match(line)
        key, text = (match.group(1), match.group(2)) if match else (str(number), line)
        sentences[_sentence_id(key)] = text.split()
    return sentences


def _sentence_id(key: str) -> str:
    return str(int(key)) if key.isdigit() else key


def read_naacl_links(path: str | Path) -> dict[str, Reference]:
    """`sent_id src_pos tgt_pos [S|P] [confidence]` lines (1-based positions, 0 = NULL: skipped;
    no S/P mark = sure) -> {sentence id: Reference with 0-based links}."""
    sure: dict[str, set[Link]] = {}
    possible: dict[str, set[Link]] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 3 or not fields[1].isdigit() or not fields[2].isdigit():
            raise DataError(f"{path}:{number}: expected 'sent_id src_pos tgt_pos [S|P]', got {line!r}")
        key, s, t = _sentence_id(fields[0]), int(fields[1]), int(fields[2])
        kind = fields[3].upper() if len(fields) > 3 else "S"
        if kind not in ("S", "P"):
            raise DataError(f"{path}:{number}: the link kind must be S or P, got {fields[3]!r}")
        sure.setdefault(key, set())
        possible.setdefault(key, set())
        if s == 0 or t == 0:
            continue  # a NULL link: the word is unaligned
        (sure if kind == "S" else possible)[key].add((s - 1, t - 1))
    return {key: Reference.of(sure[key], possible[key]) for key in sure}


@dataclass
class GoldSet:
    """Human-aligned sentences: word tokens of both sides and their references, same order."""

    name: str
    src_words: list[list[str]]
    tgt_words: list[list[str]]
    references: list[Reference]
    ids: list[str] = field(default_factory=list)


def read_naacl(src_text: str | Path, tgt_text: str | Path, links: str | Path, name: str = "gold") -> GoldSet:
    """The three files of a NAACL 2003 test set (e.g. Hansards test.e, test.f, test.wa.nullalign),
    source first as the links' first position. Sentences without links keep an empty reference."""
    src, tgt, refs = read_naacl_text(src_text), read_naacl_text(tgt_text), read_naacl_links(links)
    if set(src) != set(tgt):
        raise DataError(f"{src_text} and {tgt_text} hold different sentence ids")
    unknown = set(refs) - set(src)
    if unknown:
        raise DataError(f"{links} has links for sentences not in {src_text}: {sorted(unknown)[:5]}")
    ids = list(src)
    references = [refs.get(key, Reference.of(())) for key in ids]
    for key, reference in zip(ids, references):
        for s, t in reference.possible:
            if s >= len(src[key]) or t >= len(tgt[key]):
                raise DataError(f"{links}: sentence {key} links word {s + 1}-{t + 1} beyond its "
                                f"{len(src[key])} source / {len(tgt[key])} target words")
    return GoldSet(name, [src[k] for k in ids], [tgt[k] for k in ids], references, ids)
