"""Words for alignment, and which word each sentencepiece piece belongs to.

Alignments are over words, not subwords. `tokenize` is a small Moses-like tokeniser (no
sacremoses dependency): split at whitespace, then split punctuation off words, one token per
punctuation mark:

  * a word is a run of letters/digits/underscores, hyphens inside a word included ("t-shirt");
    numbers keep their inner "." and "," ("3.5", "1,000")
  * every other non-space character is a token of its own ("." "," "(" "!" ...)
  * apostrophes: French, Italian, Catalan (elision) keep the apostrophe on the left word
    ("l'herbe" -> "l'" "herbe"; no exception list, so "aujourd'hui" -> "aujourd'" "hui"); other
    languages put it on the right word ("man's" -> "man" "'s", "don't" -> "don" "'t"), as
    Moses' English rules do. An apostrophe not between two word characters is punctuation.

Words keep their case (the aligner lower-cases for its own statistics).

`piece_words(pieces, words)` maps each piece to the word its first character falls in, by
walking the characters of both (whitespace and sentencepiece's "▁" removed, NFKC applied to both
as sentencepiece's default normaliser does); where they still differ (an <unk> piece, a rare
normalisation), difflib matches the character strings. `word_pieces` turns that into the labels
`viz.merge_subwords` groups by, so attention over pieces becomes attention over these words with
the project's one merging rule (a word's source columns summed, its target rows averaged).
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Sequence

from attnmt.data.vocab import BOS_PIECE, EOS_PIECE, PAD_PIECE

WORD_START = "\u2581"
SPECIALS = (BOS_PIECE, EOS_PIECE, PAD_PIECE)
ELIDING_LANGUAGES = ("fr", "it", "ca")
APOSTROPHES = "'’"

_TOKEN = re.compile(r"\d+(?:[.,]\d+)+|[^\W_]+(?:[-_][^\W_]+)*|_+|\S", re.UNICODE)


def tokenize(text: str, lang: str = "en") -> list[str]:
    """Moses-like word tokens of one sentence (see the module doc)."""
    raw = [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]
    elide = lang.split("_")[0].lower() in ELIDING_LANGUAGES
    tokens: list[str] = []
    i = 0
    while i < len(raw):
        token, start, _ = raw[i]
        inside_word = (token in APOSTROPHES and 0 < i < len(raw) - 1 and _is_word(raw[i - 1][0]) and _is_word(raw[i + 1][0])
                       and raw[i - 1][2] == start and raw[i + 1][1] == start + 1)
        if inside_word and elide:
            tokens[-1] += token  # l' herbe
        elif inside_word:
            tokens.append(token + raw[i + 1][0])  # man 's
            i += 1
        else:
            tokens.append(token)
        i += 1
    return tokens


def _is_word(token: str) -> bool:
    return token[:1].isalnum()


def _chars(tokens: Sequence[str]) -> tuple[str, list[int]]:
    """Tokens -> (their characters joined, NFKC, no whitespace / "▁"; owner token of each character)."""
    chars, owners = [], []
    for index, token in enumerate(tokens):
        for char in unicodedata.normalize("NFKC", token):
            if char.isspace() or char == WORD_START:
                continue
            chars.append(char)
            owners.append(index)
    return "".join(chars), owners


def piece_words(pieces: Sequence[str], words: Sequence[str]) -> list[int | None]:
    """Word index of every piece (None for <s> / </s> / <pad>, and for pieces that hold no
    character of any word). Monotone: a later piece never maps to an earlier word."""
    content = [p if p not in SPECIALS else "" for p in pieces]
    piece_chars, piece_owner = _chars(content)
    word_chars, word_owner = _chars(words)
    if piece_chars == word_chars:
        char_word = list(word_owner)
    else:  # unknown pieces ("<unk>", "⁇") or normalisation: match the character strings
        char_word = [None] * len(piece_chars)
        matcher = difflib.SequenceMatcher(None, piece_chars, word_chars, autojunk=False)
        for tag, a0, a1, b0, b1 in matcher.get_opcodes():
            for k in range(a0, a1):
                if tag == "equal":
                    char_word[k] = word_owner[b0 + k - a0]
                elif b1 > b0:  # replaced characters: spread over the replacing ones
                    char_word[k] = word_owner[min(b0 + (k - a0) * (b1 - b0) // (a1 - a0), b1 - 1)]
    first_char: dict[int, int] = {}
    for position, owner in enumerate(piece_owner):
        first_char.setdefault(owner, position)
    result: list[int | None] = []
    last = -1
    for index in range(len(pieces)):
        word = char_word[first_char[index]] if index in first_char else None
        if word is not None:
            word = max(word, last)  # keep the order (a difflib match may jump back)
            last = word
        result.append(word)
    return result


def word_pieces(pieces: Sequence[str], words: Sequence[str]) -> tuple[list[str], list[int | None]]:
    """Labels for viz.merge_subwords that group the pieces by `words` instead of by "▁"
    -> (labels, word index of each merged group; None for specials and empty pieces).

    A piece starts a new group when its word differs from the previous piece's; a piece with no
    word of its own (e.g. a lone "▁") joins the next piece's word when it precedes one.
    """
    owners = piece_words(pieces, words)
    for i in range(len(owners) - 2, -1, -1):  # a bare "▁" belongs with what follows it
        if owners[i] is None and pieces[i] not in SPECIALS and owners[i + 1] is not None:
            owners[i] = owners[i + 1]
    labels: list[str] = []
    groups: list[int | None] = []
    previous: object = object()
    for piece, owner in zip(pieces, owners):
        if piece in SPECIALS:
            labels.append(piece)
            groups.append(None)
            previous = object()
            continue
        if owner != previous or owner is None:
            labels.append(WORD_START + "w")
            groups.append(owner)
        else:
            labels.append("w")
        previous = owner
    return labels, groups
