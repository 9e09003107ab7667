"""The dedup stage's Beam side."""

from corpusmill.transforms.dedup.beam.deduplicate import Deduplicate

__all__ = ["Deduplicate"]
