"""The synthetic-data demo: dataset generator (no mmdet needed to import)."""
from .synthetic import CLASSES, PALETTE, SyntheticConfig, class_counts, generate

__all__ = ['CLASSES', 'PALETTE', 'SyntheticConfig', 'class_counts', 'generate']
