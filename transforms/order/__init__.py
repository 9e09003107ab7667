"""Stage ``order`` (kernels built, Beam side not yet): In-Context Pretraining order of the kept documents.

Kernels here: ``embedders`` (interface, ``lexical``, ``transformer``),
``knn_graph`` (exact and partitioned faiss kNN, recall), ``partitions``
(traversal partitions refined by neighbour votes), ``traversal`` (the paper's
Algorithm 1 and the ``improved`` mode, with ``path_joining`` and
``local_search``), ``quality`` (ordering quality). Still to come: packing into
contexts, the Beam side in ``order/beam/`` (``OrderDocuments``, a stage as
``corpusmill.transforms.stage`` describes), the ``order`` config section and its
registration line in ``corpusmill.pipelines.stages``.
"""
