"""Importers for published PyTorch checkpoints (state dicts as NumPy arrays, no torch needed)."""
