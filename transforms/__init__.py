"""PTransforms and their Beam-free kernels, one subpackage per stage (``io``, ``dedup``, ``decompose``, ``order``).

In every subpackage the modules at its top are kernels (numpy, pyarrow, numba;
no ``apache_beam``) and its ``beam/`` package is the Beam side. ``common``
(metrics namespace, document keys, sort-and-split) and ``stage`` (the stage
contract) are shared by both sides.
"""
