"""Flax networks built from genotypes: cells, builder, zoo, counting."""
from models.network import build

__all__ = ['build']
