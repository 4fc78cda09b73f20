"""Building blocks: attention (one interface), RNN and Transformer encoders/decoders."""
