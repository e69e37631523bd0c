"""The vector layer: FAISS indices of an index folder, their kinds, tuning, files and the rows behind them.

Modules, each owning one concept (import them directly; this package imports nothing, so that
reading :mod:`~indexer.vectors.tables` or :mod:`~indexer.vectors.policy` never loads FAISS):

- :mod:`~indexer.vectors.tables`: which database rows back each of the five indices
  (``VECTOR_TABLES``), read by the store and by search;
- :mod:`~indexer.vectors.policy`: ``FaissPolicy``, the kind for a size and the retraining rule;
- :mod:`~indexer.vectors.index_info`: the kinds' names and ``IndexInfo``, the manifest record of an index;
- :mod:`~indexer.vectors.kinds`: ``VectorIndex`` and its three kinds (exact, IVF, on-disk IVF);
- :mod:`~indexer.vectors.ondisk`: the training, shards and data files of the on-disk kind;
- :mod:`~indexer.vectors.tuning`: ``nlist``, tuning queries, exact top-k, the ``nprobe`` tuner;
- :mod:`~indexer.vectors.ops`: search, list assignment and edits of an index in memory;
- :mod:`~indexer.vectors.files`: atomic writes, reading and mapping, staged files, leftovers;
- :mod:`~indexer.vectors.arrays`: vectors, ids and chunks as FAISS takes them.
"""
