"""Stage ``order`` (not built yet): In-Context Pretraining order of the kept documents.

Where it goes: Beam-free kernels here (embedders, kNN graph, traversal,
packing, ordering quality), its Beam side in ``order/beam/`` (``OrderDocuments``,
a stage as ``corpusmill.transforms.stage`` describes), its config section in
``corpusmill.schemas.config``, and one registration line in
``corpusmill.pipelines.stages``.
"""
