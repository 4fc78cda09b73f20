"""Encoder-decoder models implementing the Seq2Seq protocol (see seq2seq.py)."""
