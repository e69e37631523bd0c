"""Retrieval metrics over similarity matrices."""

from __future__ import annotations

import numpy as np


def retrieval_metrics(sim: np.ndarray, targets: np.ndarray | None = None,
                      ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Recall@k and mean reciprocal rank.

    Parameters
    ----------
    sim : array, shape (n_queries, n_items)
        Higher is more similar.
    targets : array of int, shape (n_queries,) | None
        The matching item of each query (default: the diagonal).
    ks : tuple of int
        Cut-offs.

    Returns
    -------
    dict
        ``{"R@1": ..., "R@5": ..., "R@10": ..., "MRR": ..., "n": n_queries}``.
    """
    sim = np.asarray(sim, dtype=np.float64)
    n = sim.shape[0]
    targets = np.arange(n) if targets is None else np.asarray(targets)
    own = sim[np.arange(n), targets]
    # rank = 1 + number of items strictly better than the match (ties count in its favour)
    rank = 1 + (sim > own[:, None]).sum(axis=1)
    out = {f"R@{k}": float((rank <= k).mean()) for k in ks}
    out["MRR"] = float((1.0 / rank).mean())
    out["n"] = int(n)
    return out


def chance_recall(n_items: int, k: int) -> float:
    """Recall@k of a random ranking over ``n_items``."""
    return min(k, n_items) / n_items if n_items else 0.0
