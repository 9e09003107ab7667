"""Stage ``decompose``: tokenization and Dataset Decomposition (Beam-free kernels); Beam side in ``beam/``."""
