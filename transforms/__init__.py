"""corpusmill.transforms."""
