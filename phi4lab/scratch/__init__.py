"""Code written to be read: Phi-4's forward pass (``architecture``) and byte-level BPE (``bpe``) from scratch.

Each is checked against the library it mirrors (Hugging Face's Phi3 modules, tiktoken).
"""
