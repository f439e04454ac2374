"""Pieces the training scripts share, each in one small tested module."""
