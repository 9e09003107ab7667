"""The decompose stage's Beam side."""

from corpusmill.transforms.decompose.beam.decompose_documents import DecomposeDocuments

__all__ = ["DecomposeDocuments"]
