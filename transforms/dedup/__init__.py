"""Stage ``dedup``: exact and MinHash-LSH near duplicates (Beam-free kernels); Beam side in ``beam/``."""
