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
    # Ties (e.g. two identical reports) are broken at random: the match's rank is uniform
    # over [better + 1, better + ties + 1]; R@k and MRR are their expectations.
    better = (sim > own[:, None]).sum(axis=1)
    ties = (sim == own[:, None]).sum(axis=1) - 1
    out = {f"R@{k}": float(np.clip((k - better) / (ties + 1), 0, 1).mean()) for k in ks}
    out["MRR"] = float(np.mean([np.mean(1.0 / np.arange(b + 1, b + t + 2)) for b, t in zip(better, ties, strict=True)]))
    out["n"] = int(n)
    return out

def chance_recall(n_items: int, k: int) -> float:
    """Recall@k of a random ranking over ``n_items``."""
    return min(k, n_items) / n_items if n_items else 0.0


def same_patient_recall(emb: np.ndarray, patients: np.ndarray, k: int = 5) -> dict:
    """Prior cases: how often another recording of the same patient is among the ``k`` nearest.

    Parameters
    ----------
    emb : array, shape (n_recordings, dim)
        Normalised recording vectors (cosine similarity).
    patients : array of str, shape (n_recordings,)
    k : int

    Returns
    -------
    dict
        ``{"R@k", "n"(queries with another recording of their patient), "chance"}``.
    """
    sim = emb @ emb.T
    np.fill_diagonal(sim, -np.inf)
    hits, n = 0, 0
    for i in range(len(emb)):
        others = (patients == patients[i]) & (np.arange(len(emb)) != i)
        if not others.any():
            continue
        top = np.argsort(-sim[i])[:k]
        hits += bool(others[top].any())
        n += 1
    kk = min(k, len(emb) - 1)  # fewer candidates than k: every one is in the top k
    chance = float(np.mean([1 - np.prod([(len(emb) - 1 - (patients == p).sum() + 1 - j) / (len(emb) - 1 - j)
                                         for j in range(kk)]) for p in patients])) if n else float("nan")
    return {f"R@{k}": hits / n if n else float("nan"), "n": n, "chance": chance}
