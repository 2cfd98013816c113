"""The corpus: download, tokenizer, token files and training batches."""
