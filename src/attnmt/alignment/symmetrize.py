"""Symmetrisation of two directional alignments (Och & Ney 2003; Koehn et al. 2003, Moses).

Both inputs are link sets over (source word, target word): `forward` from the aligner that links
each target word to at most one source word, `backward` from the one that links each source word
to at most one target word (already turned into (source, target) pairs).

  intersection          high precision
  union                 high recall
  grow-diag             intersection, then repeatedly add union links that neighbour (8
                        directions) a current link and cover a word not yet aligned
  grow-diag-final       + links of each direction (forward first) whose source OR target word
                        is still unaligned
  grow-diag-final-and   + links of each direction whose source AND target words are both
                        unaligned (the Moses default, used for the reference alignments)
"""

from __future__ import annotations

from collections.abc import Iterable

from attnmt.alignment.links import Link

NEIGHBOURS = ((-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))
HEURISTICS = ("intersection", "union", "grow-diag", "grow-diag-final", "grow-diag-final-and")


def _grow_diag(forward: set[Link], backward: set[Link]) -> set[Link]:
    union = forward | backward
    alignment = forward & backward
    aligned_src = {s for s, _ in alignment}
    aligned_tgt = {t for _, t in alignment}
    added = True
    while added:  # Moses' GROW-DIAG: passes over the current links until nothing is added
        added = False
        for s, t in sorted(alignment):
            for ds, dt in NEIGHBOURS:
                candidate = (s + ds, t + dt)
                if candidate in alignment or candidate not in union:
                    continue
                if candidate[0] not in aligned_src or candidate[1] not in aligned_tgt:
                    alignment.add(candidate)
                    aligned_src.add(candidate[0])
                    aligned_tgt.add(candidate[1])
                    added = True
    return alignment


def _final(alignment: set[Link], links: Iterable[Link], both_unaligned: bool) -> None:
    aligned_src = {s for s, _ in alignment}
    aligned_tgt = {t for _, t in alignment}
    for s, t in sorted(links):
        free_s, free_t = s not in aligned_src, t not in aligned_tgt
        if (free_s and free_t) if both_unaligned else (free_s or free_t):
            alignment.add((s, t))
            aligned_src.add(s)
            aligned_tgt.add(t)


def symmetrize(forward: Iterable[Link], backward: Iterable[Link], heuristic: str = "grow-diag-final-and") -> set[Link]:
    """Combine two directional alignments of one sentence with one of HEURISTICS."""
    forward, backward = set(forward), set(backward)
    if heuristic == "intersection":
        return forward & backward
    if heuristic == "union":
        return forward | backward
    if heuristic not in HEURISTICS:
        raise ValueError(f"unknown symmetrisation {heuristic!r}; choose from {', '.join(HEURISTICS)}")
    alignment = _grow_diag(forward, backward)
    if heuristic == "grow-diag-final":
        _final(alignment, forward, both_unaligned=False)
        _final(alignment, backward, both_unaligned=False)
    elif heuristic == "grow-diag-final-and":
        _final(alignment, forward, both_unaligned=True)
        _final(alignment, backward, both_unaligned=True)
    return alignment
