"""Reading and writing: inputs, formats, validation, shard files (Beam-free); Beam side in ``beam/``."""
