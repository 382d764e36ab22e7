"""Data: raw files through package clients, TFDS builders, tokenizers, objectives and the input pipeline."""
