"""attnmt.alignment on hand-made cases: AER, symmetrisation, words, attention -> links, the aligner, files."""

from __future__ import annotations

import os
import random
import stat

import numpy as np
import pytest
import torch

from attnmt.alignment.aligner import AlignerSettings, StatisticalAligner
from attnmt.alignment.attention import AttentionScorer, attention_links, best_map, diagonal_links, word_attention
from attnmt.alignment.links import (AlignmentCounts, Reference, aer, alignment_scores, format_pharaoh, parse_pharaoh,
                                    read_naacl, read_naacl_links, read_naacl_text)
from attnmt.alignment.reference import reference_alignments
from attnmt.alignment.symmetrize import symmetrize
from attnmt.alignment.words import piece_words, tokenize, word_pieces
from attnmt.errors import DataError


# ------------------------------------------------------------------------------ AER
def test_aer_of_perfect_and_disjoint_alignments() -> None:
    links = {(0, 0), (1, 2), (2, 1)}
    assert aer(links, links) == 0.0
    assert aer({(0, 1), (1, 0)}, links) == 1.0
    assert aer(set(), links) == 1.0  # nothing predicted: recall 0


def test_aer_with_sure_and_possible_links() -> None:
    # S = {(0,0), (1,1)}, P = S + {(2,1)}; A = {(0,0), (2,1), (2,2)}
    # |A∩S| = 1, |A∩P| = 2 -> AER = 1 - 3/5; precision 2/3, recall 1/2
    scores = alignment_scores([{(0, 0), (2, 1), (2, 2)}], [Reference.of({(0, 0), (1, 1)}, {(2, 1)})])
    assert scores["aer"] == pytest.approx(0.4)
    assert scores["precision"] == pytest.approx(2 / 3) and scores["recall"] == pytest.approx(0.5)
    # a possible link that is predicted never hurts: A = S + a possible link has AER 0
    assert aer({(0, 0), (1, 1), (2, 1)}, {(0, 0), (1, 1)}, {(2, 1)}) == 0.0


def test_counts_pool_sentences_instead_of_averaging() -> None:
    counts = AlignmentCounts()
    counts.add({(0, 0)}, Reference.of({(0, 0)}))  # perfect, 1 link
    counts.add({(0, 1), (1, 0), (2, 2)}, Reference.of({(0, 0), (1, 1), (2, 2)}))  # 1 of 3
    scores = counts.scores()
    assert scores["aer"] == pytest.approx(1 - (2 + 2) / (4 + 4))  # pooled: not the mean of 0 and 2/3
    assert scores["links_per_sentence"] == 2.0
    assert np.isnan(AlignmentCounts().scores()["aer"])


# ------------------------------------------------------------------------------ symmetrisation
FORWARD = {(0, 0), (1, 1), (3, 2), (3, 3)}  # each target word has one source word
BACKWARD = {(0, 0), (1, 1), (2, 1), (3, 3), (4, 4)}  # each source word has one target word (as src-tgt)


def test_intersection_and_union() -> None:
    assert symmetrize(FORWARD, BACKWARD, "intersection") == {(0, 0), (1, 1), (3, 3)}
    assert symmetrize(FORWARD, BACKWARD, "union") == FORWARD | BACKWARD


def test_grow_diag_adds_neighbours_of_unaligned_words_only() -> None:
    # from the intersection: (2,1) neighbours (1,1) and source 2 is unaligned -> added;
    # (3,2) neighbours (3,3) and target 2 is unaligned -> added; (4,4) neighbours (3,3), both free -> added
    assert symmetrize(FORWARD, BACKWARD, "grow-diag") == {(0, 0), (1, 1), (2, 1), (3, 2), (3, 3), (4, 4)}
    # a union link far from every current link is not grown into
    assert symmetrize({(0, 0), (5, 5)}, {(0, 0)}, "grow-diag") == {(0, 0)}
    # a neighbour whose two words are both aligned already is not added
    assert symmetrize({(0, 0), (1, 1), (0, 1)}, {(0, 0), (1, 1)}, "grow-diag") == {(0, 0), (1, 1)}


def test_final_and_final_and() -> None:
    forward, backward = {(0, 0), (5, 5)}, {(0, 0), (5, 4), (0, 3)}
    # grow-diag keeps the intersection; (5,5), (5,4), (0,3) are not neighbours of (0,0)
    assert symmetrize(forward, backward, "grow-diag") == {(0, 0)}
    # final: forward first: (5,5) both free -> added; then backward: (0,3) target 3 free -> added,
    # (5,4) target 4 free -> added (OR)
    assert symmetrize(forward, backward, "grow-diag-final") == {(0, 0), (5, 5), (0, 3), (5, 4)}
    # final-and: (5,5) added; (0,3): source 0 aligned -> no; (5,4): source 5 now aligned -> no
    assert symmetrize(forward, backward, "grow-diag-final-and") == {(0, 0), (5, 5)}
    with pytest.raises(ValueError, match="unknown symmetrisation"):
        symmetrize(forward, backward, "grow")


# ------------------------------------------------------------------------------ words
def test_tokenize_splits_punctuation_and_handles_apostrophes_per_language() -> None:
    assert tokenize("Un chien court sur l'herbe, près d'une clôture.", "fr") == [
        "Un", "chien", "court", "sur", "l'", "herbe", ",", "près", "d'", "une", "clôture", "."]
    assert tokenize("A man's t-shirt costs 3.50 (don't ask).", "en") == [
        "A", "man", "'s", "t-shirt", "costs", "3.50", "(", "don", "'t", "ask", ")", "."]
    assert tokenize("' quoted '", "en") == ["'", "quoted", "'"]
    assert tokenize("  ", "en") == []


def test_pieces_map_to_words_by_characters() -> None:
    words = tokenize("The cat sat on the mat.")  # The cat sat on the mat .
    assert piece_words(["▁The", "▁c", "at", "▁sat", "▁on", "▁the", "▁mat", ".", "</s>"], words) == [0, 1, 1, 2, 3, 4, 5, 6, None]
    # a piece that runs over a word boundary belongs to the word where it starts: "." gets no piece
    assert piece_words(["▁The", "▁cat", "▁sat", "▁on", "▁the", "▁ma", "t.", "</s>"], words) == [0, 1, 2, 3, 4, 5, 5, None]
    # a bare "▁" joins the word that follows it; an unknown piece is matched by the characters around it
    labels, groups = word_pieces(["▁", "The", "▁", "<unk>", "at", "▁sat", "▁on", "▁the", "▁mat", ".", "</s>"], words)
    assert groups == [0, 1, 2, 3, 4, 5, 6, None]
    assert labels[:5] == ["▁w", "w", "▁w", "w", "w"]


def test_word_attention_sums_source_columns_and_averages_target_rows() -> None:
    src_pieces = ["▁A", "▁c", "at", ".", "</s>"]  # words: A cat .
    tgt_pieces = ["▁Un", "▁ch", "at", "</s>"]  # words: Un chat
    weights = torch.tensor([
        [0.7, 0.1, 0.1, 0.0, 0.1],
        [0.1, 0.2, 0.3, 0.1, 0.3],
        [0.0, 0.5, 0.4, 0.1, 0.0],
        [0.0, 0.0, 0.0, 0.2, 0.8],
    ])
    merged = word_attention(weights[None, None], src_pieces, tgt_pieces, ["A", "cat", "."], ["Un", "chat"])
    assert merged.shape == (1, 1, 2, 4)  # 2 target words, 3 source words + the "no word" column
    expected = np.array([[0.7, 0.2, 0.0, 0.1],  # "Un": cat = 0.1 + 0.1; </s> -> last column
                         [0.05, 0.7, 0.1, 0.15]])  # "chat": mean of rows 2 and 3
    np.testing.assert_allclose(merged[0, 0], expected, atol=1e-6)
    assert attention_links(merged[0, 0]) == {(0, 0), (1, 1)}
    assert attention_links(merged[0, 0], threshold=0.1) == {(0, 0), (1, 0), (1, 1), (2, 1)}
    # a row whose argmax is the "no word" column (</s>) gives no link
    assert attention_links(np.array([[0.1, 0.2, 0.7]])) == set()


def test_scorer_reports_every_head_and_the_mean_and_finds_the_best() -> None:
    reference = Reference.of({(0, 0), (1, 1)})
    right = np.array([[0.9, 0.1, 0.0], [0.1, 0.9, 0.0]])  # diagonal: perfect
    wrong = np.array([[0.2, 0.8, 0.0], [0.8, 0.2, 0.0]])  # crossed: AER 1
    maps = np.stack([np.stack([right, wrong]), np.stack([wrong, wrong])])  # [L=2, H=2, T, S+1]
    scorer = AttentionScorer()
    scorer.add(maps, reference)
    scores = scorer.scores()
    assert list(scores) == ["layer_0", "layer_1"] and list(scores["layer_0"]) == ["head_0", "head_1", "mean"]
    assert scores["layer_0"]["head_0"]["aer"] == 0.0 and scores["layer_0"]["head_1"]["aer"] == 1.0
    assert scores["layer_0"]["mean"]["aer"] == 0.0  # mean of heads: [0.55, 0.45] then [0.45, 0.55]
    assert scores["layer_1"]["mean"]["aer"] == 1.0
    assert best_map(scores)["layer"] == "layer_0" and best_map(scores)["head"] == "head_0"
    with pytest.raises(ValueError, match="disagree"):
        scorer.add(maps[:1], reference)


def test_diagonal_baseline() -> None:
    assert diagonal_links(3, 3) == {(0, 0), (1, 1), (2, 2)}
    assert diagonal_links(2, 4) == {(0, 0), (0, 1), (1, 2), (1, 3)}


# ------------------------------------------------------------------------------ the aligner
def _synthetic_corpus(pairs: int, seed: int = 0):
    """A made-up language pair with a one-to-one dictionary; adjective-noun order swapped in the
    target (like English -> French), so the true alignment is not the diagonal."""
    rng = random.Random(seed)
    nouns, adjectives, others = [f"n{i}" for i in range(12)], [f"a{i}" for i in range(8)], [f"w{i}" for i in range(15)]
    translate = {w: w.upper() + "x" for w in nouns + adjectives + others}
    src, tgt, gold = [], [], []
    for _ in range(pairs):
        words = rng.sample(others, rng.randint(1, 3)) + [rng.choice(adjectives), rng.choice(nouns)] + rng.sample(others, rng.randint(0, 3))
        k = next(i for i, w in enumerate(words) if w.startswith("a"))
        order = list(range(len(words)))
        order[k], order[k + 1] = order[k + 1], order[k]  # target position j holds source word order[j]
        src.append(words)
        tgt.append([translate[words[i]] for i in order])
        gold.append({(i, j) for j, i in enumerate(order)})
    return src, tgt, gold


def test_aligner_finds_a_known_one_to_one_alignment() -> None:
    src, tgt, gold = _synthetic_corpus(400)
    aligner = StatisticalAligner().fit(src, tgt)
    forward, backward = aligner.align_directions(src, tgt)
    assert alignment_scores(forward, [Reference.of(g) for g in gold])["aer"] < 0.01
    assert alignment_scores(backward, [Reference.of(g) for g in gold])["aer"] < 0.01
    links = aligner.align(src, tgt)
    assert alignment_scores(links, [Reference.of(g) for g in gold])["aer"] < 0.01
    # IBM Model 1 alone cannot break ties between repeated words as well, but still learns the dictionary
    ibm1 = StatisticalAligner(AlignerSettings(ibm2_iterations=0)).fit(src, tgt).align(src, tgt)
    assert alignment_scores(ibm1, [Reference.of(g) for g in gold])["aer"] < 0.1


def test_aligner_saves_loads_and_aligns_unseen_pairs(tmp_path) -> None:
    src, tgt, _ = _synthetic_corpus(300)
    aligner = StatisticalAligner().fit(src, tgt)
    aligner.save(tmp_path / "aligner")
    loaded = StatisticalAligner.load(tmp_path / "aligner")
    assert loaded.align(src[:50], tgt[:50]) == aligner.align(src[:50], tgt[:50])
    # a new pair of known words, plus a word never seen (linked by position or left out)
    new_src, new_tgt = [["w1", "a2", "n3", "zzz"]], [["W1x", "N3x", "A2x", "ZZZ"]]
    links = loaded.align(new_src, new_tgt)[0]
    assert {(0, 0), (1, 2), (2, 1)} <= links
    assert loaded.align([[]], [["W1x"]]) == [set()]


def test_reference_alignments_are_cached_by_their_inputs(tmp_path) -> None:
    src, tgt, gold = _synthetic_corpus(300)
    lines_src, lines_tgt = [" ".join(w) for w in src], [" ".join(w) for w in tgt]
    first = reference_alignments(lines_src[:250], lines_tgt[:250], lines_src[250:], lines_tgt[250:], "xx", "yy", tmp_path)
    assert not first.cache_hit and len(first.links) == 50 and first.meta["train_pairs"] == 250
    assert alignment_scores(first.links, [Reference.of(g) for g in gold[250:]])["aer"] < 0.01
    assert (first.folder / "links.txt").read_text().count("\n") == 50
    again = reference_alignments(lines_src[:250], lines_tgt[:250], lines_src[250:], lines_tgt[250:], "xx", "yy", tmp_path)
    assert again.cache_hit and again.folder == first.folder and again.links == first.links
    other = reference_alignments(lines_src[:249], lines_tgt[:249], lines_src[250:], lines_tgt[250:], "xx", "yy", tmp_path)
    assert other.folder != first.folder  # other training text, other key
    # the model-output path: pairs aligned with the stored tables
    _, _, links = first.align(lines_src[250:260], lines_tgt[250:260])
    assert links == [set(x) for x in first.links[:10]]


def test_reference_alignment_cache_follows_the_umask(tmp_path) -> None:
    """The cache is built in a mkdtemp folder (0700); once in place it gets the umask's modes."""
    src, tgt, _ = _synthetic_corpus(60)
    lines_src, lines_tgt = [" ".join(w) for w in src], [" ".join(w) for w in tgt]
    previous = os.umask(0o022)
    try:
        found = reference_alignments(lines_src[:50], lines_tgt[:50], lines_src[50:], lines_tgt[50:], "xx", "yy", tmp_path)
    finally:
        os.umask(previous)
    paths = [found.folder, *found.folder.rglob("*")]
    assert len(paths) > 5
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == (0o755 if path.is_dir() else 0o644), path


# ------------------------------------------------------------------------------ files
def test_pharaoh_round_trip() -> None:
    links = {(2, 0), (0, 1), (10, 3)}
    assert format_pharaoh(links) == "0-1 2-0 10-3"
    assert parse_pharaoh("0-1 2-0 10-3") == links
    assert parse_pharaoh("") == frozenset()


def test_naacl_2003_files(tmp_path) -> None:
    (tmp_path / "test.e").write_text("<s snum=0001> the cat sleeps . </s>\n<s snum=0002> yes </s>\n", encoding="utf-8")
    (tmp_path / "test.f").write_text("<s snum=0001> le chat dort . </s>\n<s snum=0002> oui </s>\n", encoding="utf-8")
    (tmp_path / "test.wa").write_text(
        "0001 1 1 S\n0001 2 2 S\n0001 3 3 P\n0001 4 4\n0001 0 3 S\n0002 1 1 P 0.9\n", encoding="utf-8")
    assert read_naacl_text(tmp_path / "test.e") == {"1": ["the", "cat", "sleeps", "."], "2": ["yes"]}
    refs = read_naacl_links(tmp_path / "test.wa")
    assert refs["1"].sure == {(0, 0), (1, 1), (3, 3)}  # no mark = sure; the NULL link is skipped
    assert refs["1"].possible == {(0, 0), (1, 1), (2, 2), (3, 3)}
    assert refs["2"].sure == frozenset() and refs["2"].possible == {(0, 0)}
    gold = read_naacl(tmp_path / "test.e", tmp_path / "test.f", tmp_path / "test.wa", "hansards")
    assert gold.ids == ["1", "2"] and gold.tgt_words[0] == ["le", "chat", "dort", "."]
    # only possible links in a sentence: predicting them gives no AER penalty, recall has no sure links to find
    scores = alignment_scores([{(0, 0), (1, 1), (2, 2), (3, 3)}, {(0, 0)}], gold.references)
    assert scores["aer"] == 0.0 and scores["precision"] == 1.0

    (tmp_path / "bad.wa").write_text("0001 1 x S\n", encoding="utf-8")
    with pytest.raises(DataError, match="bad.wa:1"):
        read_naacl_links(tmp_path / "bad.wa")
    (tmp_path / "far.wa").write_text("0001 9 1 S\n", encoding="utf-8")
    with pytest.raises(DataError, match="beyond"):
        read_naacl(tmp_path / "test.e", tmp_path / "test.f", tmp_path / "far.wa")


def test_eflomal_backend_when_installed(tmp_path) -> None:
    pytest.importorskip("eflomal")  # the optional extra: pip install -e ".[align]"
    src, tgt, gold = _synthetic_corpus(300)
    lines_src, lines_tgt = [" ".join(w) for w in src], [" ".join(w) for w in tgt]
    found = reference_alignments(lines_src[:250], lines_tgt[:250], lines_src[250:], lines_tgt[250:], "xx", "yy", tmp_path,
                                 backend="eflomal")
    assert found.meta["backend"] == "eflomal" and len(found.links) == 50
    assert alignment_scores(found.links, [Reference.of(g) for g in gold[250:]])["aer"] < 0.05
    _, _, links = found.align(lines_src[250:255], lines_tgt[250:255])  # re-runs eflomal with these pairs appended
    assert alignment_scores(links, [Reference.of(g) for g in gold[250:255]])["aer"] < 0.05


def test_heatmaps_outline_the_reference_links() -> None:
    from matplotlib.patches import Rectangle

    from attnmt.viz import attention_figure

    links = {(0, 0), (2, 1)}
    figure = attention_figure(np.full((2, 3), 1 / 3), ["A", "cat", "</s>"], ["Un", "chat"], "t", alignment=links)
    [ax] = [a for a in figure.axes if a.get_images() and a.get_xlabel() == "source"]
    outlined = {(round(p.get_x() + 0.5), round(p.get_y() + 0.5)) for p in ax.patches if isinstance(p, Rectangle)}
    assert outlined == links  # (source column, target row) cells
    plain = attention_figure(np.full((2, 3), 1 / 3), ["A", "cat", "</s>"], ["Un", "chat"], "t")
    assert not [p for a in plain.axes for p in a.patches if isinstance(p, Rectangle)]
