"""Training and evaluation: the contrastive loss, the training loop and its recipes.

``trainer`` (recipes, ``train_archive``), ``loss`` (CLIP-style, multiple-instance),
``metrics`` (retrieval), ``probe`` (linear probes on frozen embeddings).
"""
