"""corpusmill.schemas."""
