"""Flax networks built from genotypes: cells, builder, zoo, counting, saved models."""
from models.network import build
from models.network import preprocess
from models.saved import load
from models.saved import save

__all__ = ['build', 'load', 'preprocess', 'save']
