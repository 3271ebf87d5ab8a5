"""Training tasks: what pretraining and retrieval fine-tuning hand the shared loop (``engine/``).

``pretrain.py`` and ``train_retrieval.py`` are thin CLIs over these.
"""
