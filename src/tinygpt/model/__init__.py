"""The GPT: configuration, the transformer (with its KV cache), compact vocabulary, weights, Hugging Face conversion."""
