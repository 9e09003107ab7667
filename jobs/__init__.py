"""corpusmill.jobs."""
