"""Data layer: corpora (Multi30k, own files, Hugging Face), streaming reading, sentencepiece, the
token-id cache, batching, the DataModule. docs/architecture.md has the flow."""
