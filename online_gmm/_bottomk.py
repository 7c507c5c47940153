"""A uniform sample of a partitioned stream that many workers build together: bottom-k sampling.

Every record gets a pseudo-random priority in [0, 1) computed from (seed, partition, the record's
number in its partition) alone, and the sample is the ``size`` records of smallest priority seen so
far. That is a uniform sample without replacement of everything seen, and unlike Algorithm R/L it
does not depend on the order in which partitions are read: a worker sends back only its records whose
priority is below the current cut (the sample's largest priority), and the coordinator merges. A
replay gives the same priorities, hence the same sample, bit for bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["BottomK", "priorities", "candidates"]

_MASK = (1 << 64) - 1


def priorities(seed: int, stream: int, first: int, n: int) -> np.ndarray:
    """Priorities of records ``first .. first + n - 1`` of ``stream``, shape (n,), in [0, 1).

    SplitMix64 of the record's number offset by a per-(seed, stream) constant: cheap, vectorised,
    and the same on every machine.

    Examples
    --------
    >>> p = priorities(0, 3, 10, 4)
    >>> p.shape, bool(((0 <= p) & (p < 1)).all()), bool((priorities(0, 3, 12, 2) == p[2:]).all())
    ((4,), True, True)
    """
    base = (int(seed) * 0x9E3779B97F4A7C15 + (int(stream) + 1) * 0xD1B54A32D192ED03) & _MASK
    z = np.arange(first, first + n, dtype=np.uint64) + np.uint64(base)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def candidates(X: np.ndarray, prio: np.ndarray, cut: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``X`` that may enter a bottom-``size`` sample whose current cut is ``cut``.

    Returns at most ``size`` rows (those of smallest priority below ``cut``), shapes (m, D), (m,).
    """
    sel = np.flatnonzero(prio < cut)
    if sel.size > size:
        sel = sel[np.argsort(prio[sel], kind="stable")[:size]]
    return X[sel], prio[sel]


class BottomK:
    """The ``size`` rows of smallest priority offered so far.

    Parameters
    ----------
    size : int
        Rows kept.

    Examples
    --------
    >>> rng = np.random.RandomState(0)
    >>> a, b = BottomK(5), BottomK(5)
    >>> X, p = rng.standard_normal((20, 2)), priorities(0, 0, 0, 20)
    >>> a.offer(X, p)
    >>> b.offer(*candidates(X[:10], p[:10], b.cut(), 5)); b.offer(*candidates(X[10:], p[10:], b.cut(), 5))
    >>> bool((a.data() == b.data()).all())
    True
    """

    def __init__(self, size: int) -> None:
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"size must be an integer >= 1, got {size!r}")
        self.size = int(size)
        self._X: np.ndarray | None = None
        self._p = np.empty(0)

    def __len__(self) -> int:
        return int(self._p.shape[0])

    def cut(self) -> float:
        """Only rows of priority strictly below this can still enter (1.0 until the sample is full)."""
        return 1.0 if len(self) < self.size else float(self._p[-1])

    def offer(self, X: np.ndarray, prio: np.ndarray) -> None:
        """Merge rows of shape (m, D) with their priorities of shape (m,)."""
        if X.shape[0] == 0:
            return
        X = np.asarray(X, dtype=np.float64)
        if self._X is None:
            allX, allp = X, np.asarray(prio, dtype=np.float64)
        else:
            allX, allp = np.concatenate([self._X, X]), np.concatenate([self._p, prio])
        order = np.argsort(allp, kind="stable")[:self.size]
        self._X, self._p = allX[order], allp[order]

    def data(self) -> np.ndarray:
        """The sample, shape (n, D), in priority order."""
        return np.empty((0, 0)) if self._X is None else self._X

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Pickle-free state."""
        arrays = {} if self._X is None else {"X": self._X, "priority": self._p}
        return arrays, {"size": self.size}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> BottomK:
        new = cls(int(meta["size"]))
        if "X" in arrays:
            new._X = np.array(arrays["X"], dtype=np.float64)
            new._p = np.array(arrays["priority"], dtype=np.float64)
        return new
