"""Data layer: Multi30k download, corpus reading, sentencepiece, token batching, DataModule."""
