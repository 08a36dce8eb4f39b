"""k-means (k-means++ initialisation, seeded) and silhouette scores from scikit-learn, and a scan over k.

Used for the catchment-similarity analysis of Kratzert et al. (2019): cluster basins on the EA-LSTM input-gate
embedding and on the raw attributes, and compare the silhouette scores for a range of k.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Tuple

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class KMeansResult:
    """Outcome of :func:`kmeans`.

    Attributes
    ----------
    labels : numpy.ndarray
        Cluster index (0..k-1) of each point.
    centers : numpy.ndarray
        ``[k, n_features]`` cluster means.
    inertia : float
        Sum of squared distances of the points to their centre.
    n_iter : int
        Lloyd iterations of the best initialisation.
    """

    labels: np.ndarray
    centers: np.ndarray
    inertia: float
    n_iter: int


def kmeans(points, k: int, seed: int = 0, n_init: int = 10, max_iter: int = 300, tol: float = 1e-10) -> KMeansResult:
    """k-means (scikit-learn's ``KMeans``) from ``n_init`` seeded k-means++ initialisations; the lowest inertia wins.

    Parameters
    ----------
    points : array-like
        ``[n, n_features]``.
    k : int
        Number of clusters, ``1 <= k <= n``.
    seed : int, optional
        Seed of the initialisations (results are reproducible).
    n_init : int, optional
        Number of initialisations.
    max_iter : int, optional
        Iterations per initialisation.
    tol : float, optional
        scikit-learn's convergence tolerance (relative to the data's variance).

    Returns
    -------
    KMeansResult
        Labels renumbered so that clusters appear in order of their first point (deterministic labels).
    """
    points = np.asarray(points, dtype=float)
    if points.ndim != 2:
        raise ValueError(f"points must be 2-D [n, features], got shape {points.shape}")
    if not 1 <= k <= len(points):
        raise ValueError(f"k must be between 1 and the number of points ({len(points)}), got {k}")
    from sklearn.cluster import KMeans
    fitted = KMeans(n_clusters=k, init="k-means++", n_init=n_init, max_iter=max_iter, tol=tol,
                    random_state=seed).fit(points)
    labels, centers = fitted.labels_.astype(int), fitted.cluster_centers_
    inertia = float(((points - centers[labels]) ** 2).sum())
    n_iter = int(fitted.n_iter_)
    _, first = np.unique(labels, return_index=True)
    order = labels[np.sort(first)]
    relabel = np.empty(k, dtype=int)
    relabel[order] = np.arange(len(order))
    missing = np.setdiff1d(np.arange(k), order)
    relabel[missing] = np.arange(len(order), k)
    new_centers = np.empty_like(centers)
    new_centers[relabel] = centers
    return KMeansResult(labels=relabel[labels], centers=new_centers, inertia=inertia, n_iter=n_iter)


def silhouette_samples(points, labels) -> np.ndarray:
    """Silhouette ``s(i) = (b(i) - a(i)) / max(a(i), b(i))`` of each point (Rousseeuw 1987; scikit-learn), Euclidean.

    ``a(i)`` is the mean distance of point i to the other members of its cluster, ``b(i)`` the smallest mean
    distance to the members of another cluster. A point alone in its cluster has ``s(i) = 0``.

    Raises
    ------
    ValueError
        With fewer than 2 clusters.
    """
    from sklearn.metrics import silhouette_samples as sklearn_silhouette_samples
    points = np.asarray(points, dtype=float)
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        raise ValueError("Silhouettes need at least 2 clusters.")
    return sklearn_silhouette_samples(points, labels, metric="euclidean")


def silhouette_score(points, labels) -> float:
    """Mean silhouette over all points."""
    return float(silhouette_samples(points, labels).mean())


def cluster_scan(points, ks: Iterable[int] = range(3, 16), seed: int = 0, n_init: int = 10,
                 index: Optional[Iterable] = None) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """k-means for each k and the silhouette of the result.

    Parameters
    ----------
    points : array-like or pandas.DataFrame
        ``[n, n_features]`` (a DataFrame's index names the points).
    ks : iterable of int
        Numbers of clusters; values outside ``2..n-1`` are skipped.
    seed, n_init : int
        As in :func:`kmeans`.
    index : iterable, optional
        Names of the points (default: the DataFrame index, else 0..n-1).

    Returns
    -------
    tuple of pandas.DataFrame
        ``(scan, labels)``: ``scan`` has one row per k with ``k``, ``mean_silhouette`` (mean over points),
        ``min_silhouette`` (the worst point), ``min_cluster_silhouette`` (the worst cluster's mean) and
        ``inertia``; ``labels`` is a points × k table of cluster labels.
    """
    if index is None and isinstance(points, pd.DataFrame):
        index = points.index
    values = np.asarray(points, dtype=float)
    n = len(values)
    rows, labels = [], {}
    for k in ks:
        if not 2 <= k <= n - 1:
            continue
        result = kmeans(values, k, seed=seed, n_init=n_init)
        s = silhouette_samples(values, result.labels)
        cluster_means = [s[result.labels == c].mean() for c in np.unique(result.labels)]
        rows.append({"k": k, "mean_silhouette": float(s.mean()), "min_silhouette": float(s.min()),
                     "min_cluster_silhouette": float(min(cluster_means)), "inertia": result.inertia})
        labels[k] = result.labels
    table = pd.DataFrame(rows, columns=["k", "mean_silhouette", "min_silhouette", "min_cluster_silhouette",
                                        "inertia"])
    return table, pd.DataFrame(labels, index=None if index is None else pd.Index(list(index)))


def variance_reduction(values, labels) -> float:
    """Fractional reduction in variance by clustering: ``1 - SS_within / SS_total`` (NaN values dropped).

    ``SS_within`` sums the squared deviations of each value from its cluster's mean, ``SS_total`` from the overall
    mean; 0 means the clusters explain nothing, 1 that all variance lies between clusters.
    """
    values = np.asarray(values, dtype=float)
    labels = np.asarray(labels)
    keep = np.isfinite(values)
    values, labels = values[keep], labels[keep]
    total = ((values - values.mean()) ** 2).sum() if len(values) else 0.0
    if total == 0:
        return float("nan")
    within = sum(((values[labels == c] - values[labels == c].mean()) ** 2).sum() for c in np.unique(labels))
    return float(1.0 - within / total)
