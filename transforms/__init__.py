"""PTransforms and their Beam-free kernels, one subpackage per stage (``io``, ``dedup``, ``decompose``, ``order``).

In every subpackage the modules at its top are kernels (numpy, pyarrow, numba;
no ``apache_beam``) and its ``beam/`` package is the Beam side. ``common``
(metrics namespace, document keys, sort-and-split) and ``stage`` (the stage
contract) are shared by both sides.
"""

from corpusmill.transforms.numba_cache import ensure_cache_location

# Before any kernel module defines its cache=True kernels (see numba_cache).
ensure_cache_location()
