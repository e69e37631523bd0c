"""What a vector index is: its kinds, its dimension and :class:`IndexInfo`, the record of how it was built.

The record goes into the index folder's manifest (``indices.NAME``) with the same keys as ever;
:meth:`IndexInfo.from_dict` reads the manifests of older and newer versions.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

DIM = 256
KIND_EXACT = "flat_ip"
KIND_IVF = "ivf_sq8"
KIND_ONDISK = "ivf_sq8_ondisk"
KINDS = (KIND_EXACT, KIND_IVF, KIND_ONDISK)
RECALL_K = 10
IVFDATA_SUFFIX = ".ivfdata"


@dataclasses.dataclass
class IndexInfo:
    """How an index was built, and what its tuning measured.

    Attributes
    ----------
    kind : str
        ``"flat_ip"`` (exact), ``"ivf_sq8"`` (IVF with 8-bit scalar quantisation) or
        ``"ivf_sq8_ondisk"`` (the same, HNSW quantizer, lists in an ``.ivfdata`` file).
    n : int
        Number of vectors (at build time, then after each incremental update).
    dim : int
        Vector dimension.
    nlist : int
        Number of inverted lists (0 for the exact kind).
    nprobe : int
        Lists visited per query, as tuned (0 for the exact kind).
    recall_at_10 : float
        Mean recall@10 against exact search measured at ``nprobe`` (1.0 for the exact kind).
    target_recall : float
        The recall@10 the tuning aimed for.
    n_train : int
        Vectors used to train the IVF quantizers (0 for the exact kind).
    build_seconds : float
        Wall time of the last full build (training, adding, merging and tuning).
    seed : int
        Seed of the training sample and of the tuning queries.
    train_seconds, add_seconds, merge_seconds, tune_seconds : float
        Parts of ``build_seconds`` (``merge_seconds``: on-disk kind only).
    trained_at : str
        UTC time (ISO 8601) the quantizers were trained; kept by incremental updates.
    n_at_train : int
        Vectors in the index when it was trained.
    train_residual : float
        Mean squared distance of the indexed vectors to their nearest centroid at training
        (the reference of the drift rule, :meth:`indexer.vectors.policy.FaissPolicy.retrain_reason`).
    n_added_since_train, n_removed_since_train : int
        Vectors added and removed by incremental updates since the training.
    added_residual : float
        Mean squared distance to the nearest centroid of the vectors added since the training.
    n_updates : int
        Incremental updates since the training.
    update_seconds : float
        Wall time of the last incremental update (0 after a full build).
    ivfdata : str
        Name of the inverted-list file next to the index file (on-disk kind), else ``""``.
    n_shards : int
        Shards the on-disk kind was built in (0 otherwise).
    """

    kind: str
    n: int
    dim: int = DIM
    nlist: int = 0
    nprobe: int = 0
    recall_at_10: float = 1.0
    target_recall: float = 0.95
    n_train: int = 0
    build_seconds: float = 0.0
    seed: int = 0
    train_seconds: float = 0.0
    add_seconds: float = 0.0
    merge_seconds: float = 0.0
    tune_seconds: float = 0.0
    trained_at: str = ""
    n_at_train: int = 0
    train_residual: float = 0.0
    n_added_since_train: int = 0
    n_removed_since_train: int = 0
    added_residual: float = 0.0
    n_updates: int = 0
    update_seconds: float = 0.0
    ivfdata: str = ""
    n_shards: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of the fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IndexInfo:
        """Inverse of :meth:`to_dict`; unknown keys (from newer versions) are ignored.

        Raises
        ------
        ValueError
            When a required field (``kind``, ``n``) is missing or the kind is unknown.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {key: value for key, value in d.items() if key in names}
        missing = [name for name in ("kind", "n") if name not in kwargs]
        if missing:
            raise ValueError(f"IndexInfo dict lacks {', '.join(missing)}")
        if kwargs["kind"] not in KINDS:
            raise ValueError(f"unknown index kind {kwargs['kind']!r}")
        return cls(**kwargs)


def utc_now() -> str:
    """The current UTC time, ISO 8601 (as recorded in ``IndexInfo.trained_at``)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
