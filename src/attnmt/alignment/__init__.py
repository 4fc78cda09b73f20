"""Attention as word alignment: reference alignments, and how well cross-attention matches them.

One small module per concept:
  links.py       alignment link sets, AER / precision / recall, the NAACL 2003 gold format
  symmetrize.py  intersection, union, grow-diag, grow-diag-final(-and) of two directional alignments
  words.py       the word tokeniser (Moses-like regex) and sentencepiece pieces -> words
  attention.py   teacher-forced attention, attention -> word links, scores per layer and head
  aligner.py     the statistical aligner (IBM Model 1, then a diagonal-favouring IBM Model 2), numpy EM
  reference.py   reference alignments of a corpus split, built once and cached by their inputs

Links are (source word, target word) pairs, 0-based, over the word tokens of words.tokenize.
"""
