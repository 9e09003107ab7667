"""The order stage's Beam side."""

from corpusmill.transforms.order.beam.order_documents import OrderDocuments

__all__ = ["OrderDocuments"]
