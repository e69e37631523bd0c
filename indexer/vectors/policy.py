"""How the FAISS indices of an index folder are chosen, built, updated and retrained.

One :class:`FaissPolicy` carries every threshold: the kind for a size, the shard size of the
on-disk kind, the recall target of the ``nprobe`` tuning, and the rule that says when an IVF index
must be retrained rather than updated (:meth:`FaissPolicy.retrain_reason`). It imports no FAISS,
so the store can hold one without loading it.

**Retraining** happens instead of an update when, since the last training,

- more than ``retrain_fraction`` (20 %) of the vectors the index was trained on have been added,
  or as many removed: the lists grow unevenly and ``nlist`` no longer suits the size; or
- the vectors added (once there are ``min_drift_count``, 1000, of them) lie on average more than
  ``drift_tolerance`` (25 %) farther from their nearest centroid (squared distance) than the
  indexed vectors did at training: the data moved away from the centroids (a new site, montage
  or model), and recall at the tuned ``nprobe`` would drop.

Fresh vectors from the training distribution measured 1.02 times the training mean (1.05 with
the re-added vectors of changed rows), vectors around new centres 2.9 times
(``tests/test_faiss_scale.py`` asserts 0.9 to 1.1 for the former), so the tolerance leaves room
for sampling noise and still catches data that is new.
"""

from __future__ import annotations

import dataclasses

from indexer.vectors.index_info import KIND_EXACT, KIND_IVF, KIND_ONDISK, IndexInfo


@dataclasses.dataclass
class FaissPolicy:
    """How :meth:`indexer.store.IndexStore.rebuild` chooses, builds and updates the FAISS indices.

    Attributes
    ----------
    exact_below : int
        Below this many vectors an index is exact (``flat_ip``), rebuilt on every run that
        changed something (50 000 vectors: under a second).
    large_from : int
        From this many vectors an index is the on-disk kind (``ivf_sq8_ondisk``), built in
        shards from chunks of rows; in between it is ``ivf_sq8``, built in memory.
    shard_size : int
        Vectors per shard of the on-disk kind.
    incremental : bool
        Update IVF indices with the changed rows instead of rebuilding them.
    retrain_fraction, drift_tolerance : float
        The retraining rule (:meth:`retrain_reason`).
    min_drift_count : int
        Vectors added since the training before the drift part of the rule applies.
    target_recall : float
        Recall@10 the ``nprobe`` tuning aims for.
    seed : int
        Seed of every sample, k-means and tuning query set.
    """

    exact_below: int = 50_000
    large_from: int = 2_000_000
    shard_size: int = 1_000_000
    incremental: bool = True
    retrain_fraction: float = 0.2
    drift_tolerance: float = 0.25
    min_drift_count: int = 1000
    target_recall: float = 0.95
    seed: int = 0

    def kind(self, n: int) -> str:
        """The index kind for ``n`` vectors (``flat_ip``, ``ivf_sq8`` or ``ivf_sq8_ondisk``)."""
        if n < self.exact_below:
            return KIND_EXACT
        return KIND_IVF if n < self.large_from else KIND_ONDISK

    def retrain_reason(self, info: IndexInfo, n_new: int, n_gone: int, new_residual_sum: float) -> str | None:
        """Why an IVF index should be retrained rather than updated, or None when an update will do.

        The rule (module docstring): retrain when the vectors added since the training, or those
        removed, exceed ``retrain_fraction`` of the vectors it was trained on, or when the vectors
        added since the training (at least ``min_drift_count`` of them) are on average more than
        ``drift_tolerance`` farther (squared distance) from their nearest centroid than the indexed
        vectors were at training.

        Parameters
        ----------
        info : IndexInfo
            The index as it is.
        n_new, n_gone : int
            Vectors this update would add and remove (a changed vector counts in both).
        new_residual_sum : float
            Sum of the squared distances of the new vectors to their nearest centroid.

        Returns
        -------
        str or None
            One line for the log.
        """
        base = max(info.n_at_train, 1)
        added = info.n_added_since_train + n_new
        removed = info.n_removed_since_train + n_gone
        share = self.retrain_fraction
        if added > share * base:
            return f"{added} vectors added since the training, more than {share:.0%} of the {base} trained on"
        if removed > share * base:
            return f"{removed} vectors removed since the training, more than {share:.0%} of the {base}"
        if added >= self.min_drift_count and info.train_residual > 0:
            mean = (info.added_residual * info.n_added_since_train + new_residual_sum) / added
            if mean > (1 + self.drift_tolerance) * info.train_residual:
                return (f"the {added} vectors added since the training lie {mean / info.train_residual:.2f} times "
                        f"as far from their centroids as the training data (tolerance "
                        f"{1 + self.drift_tolerance:.2f})")  # fmt: skip
        return None
