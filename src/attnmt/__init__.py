"""attnmt: attention-based neural machine translation (Bahdanau, Luong, Transformer)."""

__version__ = "0.1.0"
