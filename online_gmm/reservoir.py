"""Bounded reservoir of recent data: the sample of the stream that refits run on.

:class:`Reservoir`
    O(size) sample of the stream: uniform reservoir sampling (Vitter's Algorithm L, with skips, so a
    batch costs one copy plus one draw per *accepted* row) or a sliding window (ring buffer). Its whole
    state, including the generator, serialises to arrays plus JSON (no pickle), and a restored
    reservoir continues bit for bit.

Moved here from :mod:`online_gmm.refit`, which still exports it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from online_gmm._json import _jsonable

__all__ = ["Reservoir"]

_RESERVOIR_FORMAT = 2   # 2: acceptances drawn in blocks (a queue of drawn, not yet reached rows)
_MODES = ("reservoir", "window")


class Reservoir:
    """A bounded sample of the stream: uniform reservoir sampling or a sliding window.

    Parameters
    ----------
    size : int
        Maximum number of rows kept (memory is ``size * n_features`` float64, allocated on the first
        :meth:`add`).
    mode : {'reservoir', 'window'}, default='reservoir'
        ``'reservoir'``: every row seen so far is in the sample with the same probability
        ``size / n_seen`` (Algorithm L: geometric skips; the accepted rows are drawn in vectorised
        blocks, three uniforms each, so a batch costs no Python loop per row or per accepted row).
        ``'window'``: the last ``size`` rows (ring buffer).
    seed : int, numpy.random.SeedSequence, numpy.random.Generator or None
        Seeds the :class:`numpy.random.Generator` used for sampling (ignored in window mode). A
        Generator passed here is used (and advanced) directly.

    Attributes
    ----------
    n_seen : int
        Rows offered to :meth:`add` so far.
    n_features : int or None
        Set by the first non-empty :meth:`add`.

    Examples
    --------
    >>> import numpy as np
    >>> from online_gmm.reservoir import Reservoir
    >>> res = Reservoir(100, seed=0)
    >>> res.add(np.arange(2000.0).reshape(1000, 2))
    >>> res.data().shape, res.n_seen
    ((100, 2), 1000)
    >>> arrays, meta = res.to_arrays()
    >>> clone = Reservoir.from_arrays(arrays, meta)
    >>> batch = np.ones((500, 2))
    >>> res.add(batch); clone.add(batch)
    >>> bool(np.array_equal(res.data(), clone.data()))
    True
    >>> win = Reservoir(3, mode="window")
    >>> win.add(np.arange(5.0)[:, None])
    >>> win.data().ravel()
    array([2., 3., 4.])
    """

    def __init__(self, size: int, mode: str = "reservoir",
                 seed: int | np.random.SeedSequence | np.random.Generator | None = None) -> None:
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"size must be an integer >= 1, got {size!r}")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        self.size = int(size)
        self.mode = mode
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.n_seen = 0
        self.n_features: int | None = None
        self._buf: np.ndarray | None = None
        self._filled = 0
        self._head = 0               # window: next slot to write
        self._w = 0.0                # Algorithm L: W after the last drawn acceptance
        self._next = -1              # Algorithm L: global index of the first row not yet drawn
        self._queue_pos = np.empty(0, dtype=np.int64)   # drawn acceptances not yet reached
        self._queue_slot = np.empty(0, dtype=np.int64)

    # ------------------------------------------------------------------ public
    def __len__(self) -> int:
        return self._filled

    def add(self, X: np.ndarray) -> None:
        """Offer a batch of rows to the sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Copied; the caller's array is never kept.
        """
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D of shape (n_samples, n_features), got shape {X.shape}")
        n = X.shape[0]
        if n == 0:
            return
        if self.n_features is None:
            self.n_features = int(X.shape[1])
        elif X.shape[1] != self.n_features:
            raise ValueError(
                f"X has {X.shape[1]} features, but the reservoir holds {self.n_features}-feature rows")
        if self._buf is None:
            self._buf = np.empty((self.size, self.n_features))
        if self.mode == "window":
            self._add_window(X)
        else:
            self._add_reservoir(X)
        self.n_seen += n

    def data(self) -> np.ndarray:
        """A copy of the sample, shape (n_kept, n_features) (window mode: oldest row first).

        Returns an array of shape (0, 0) before anything was added.
        """
        if self._buf is None:
            return np.empty((0, 0))
        if self.mode == "window" and self._filled == self.size:
            return np.concatenate((self._buf[self._head:], self._buf[:self._head]))
        return self._buf[:self._filled].copy()

    # ------------------------------------------------------------------ sampling
    def _add_window(self, X: np.ndarray) -> None:
        buf, size, n = self._buf, self.size, X.shape[0]
        if n >= size:
            buf[:] = X[n - size:]
            self._head = 0
            self._filled = size
            return
        first = min(n, size - self._head)
        buf[self._head:self._head + first] = X[:first]
        buf[:n - first] = X[first:]
        self._head = (self._head + n) % size
        self._filled = min(size, self._filled + n)

    def _skips(self, w: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Algorithm L's geometric skips for the weights ``w`` from uniforms ``u`` in [0, 1)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            skip = np.floor(np.log1p(-u) / np.log1p(-w))
        skip = np.where(w >= 1.0, 0.0, skip)
        # W underflows to 0 only after astronomically many rows: nothing is accepted any more (a skip
        # is capped at 2^40 rows so that sums of a block of skips stay far from int64 overflow)
        skip = np.where((w <= 0.0) | ~np.isfinite(skip), float(1 << 40), skip)
        return np.minimum(skip, float(1 << 40)).astype(np.int64)

    def _extend_queue(self, end: int) -> None:
        """Draw accepted rows (global index and slot) until one lies at or beyond ``end``.

        Each accepted row takes three uniforms in order (its slot, the factor of W, the next skip),
        drawn in blocks: the sequence of accepted rows depends only on the generator's state, not on
        how the stream is cut into batches.
        """
        while self._next < end:
            # about size * ln(end / next) acceptances are expected before end
            c = min(1 << 16, 16 + int(1.2 * self.size * math.log(end / max(self._next, 1))))
            u = self.rng.random((c, 3))
            slots = np.minimum((u[:, 0] * self.size).astype(np.int64), self.size - 1)
            w = self._w * np.exp(np.cumsum(np.log1p(-u[:, 1])) / self.size)
            pos = self._next + np.concatenate(([0], np.cumsum(self._skips(w, u[:, 2])[:-1] + 1)))
            nxt = int(pos[-1]) + int(self._skips(w[-1:], u[-1:, 2])[0]) + 1
            self._queue_pos = np.concatenate((self._queue_pos, pos))
            self._queue_slot = np.concatenate((self._queue_slot, slots))
            self._w = float(w[-1])
            self._next = nxt

    def _add_reservoir(self, X: np.ndarray) -> None:
        buf, size, n = self._buf, self.size, X.shape[0]
        base = self.n_seen                      # global index of X[0]
        start = 0
        if self._filled < size:                 # fill phase: vectorised copy
            start = min(size - self._filled, n)
            buf[self._filled:self._filled + start] = X[:start]
            self._filled += start
            if self._filled == size:
                u = self.rng.random(2)
                self._w = float(np.exp(np.log1p(-u[0]) / size))
                self._next = size + int(self._skips(np.array([self._w]), u[1:])[0])
        end = base + n
        if start == n:
            return
        self._extend_queue(end)
        k = int(np.searchsorted(self._queue_pos, end))
        if k == 0:
            return
        rows = self._queue_pos[:k] - base
        slots = self._queue_slot[:k]
        self._queue_pos, self._queue_slot = self._queue_pos[k:], self._queue_slot[k:]
        # apply in one fancy assignment; where a slot is hit twice, the later row must win
        uniq, first = np.unique(slots[::-1], return_index=True)
        buf[uniq] = X[rows[::-1][first]]

    # ------------------------------------------------------------------ serialisation
    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Exact, pickle-free state.

        Returns
        -------
        arrays : dict of str to ndarray
            ``{"data": (n_kept, n_features) float64}`` in storage order (empty before the first add).
        meta : dict
            JSON-able: size, mode, counters, Algorithm L state and the generator's
            ``bit_generator.state`` (a dict of ints, exact through JSON).
        """
        arrays: dict[str, np.ndarray] = {"queue_pos": self._queue_pos.copy(),
                                         "queue_slot": self._queue_slot.copy()}
        if self._buf is not None:
            arrays["data"] = self._buf[:self._filled].copy()
        meta = {"format": _RESERVOIR_FORMAT, "size": self.size, "mode": self.mode,
                "n_seen": self.n_seen, "n_features": self.n_features, "filled": self._filled,
                "head": self._head, "w": self._w, "next": self._next,
                "rng": _jsonable(self.rng.bit_generator.state)}
        return arrays, meta

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> "Reservoir":
        """Inverse of :meth:`to_arrays`; the restored reservoir continues bit for bit."""
        if meta.get("format") != _RESERVOIR_FORMAT:
            raise ValueError(
                f"unsupported reservoir format {meta.get('format')!r}, expected {_RESERVOIR_FORMAT}")
        state = meta["rng"]
        try:
            bit_gen = getattr(np.random, state["bit_generator"])()
        except (AttributeError, KeyError, TypeError):
            raise ValueError(f"unknown bit generator in reservoir state: {state!r}") from None
        bit_gen.state = state
        res = cls(meta["size"], meta["mode"], seed=np.random.Generator(bit_gen))
        res.n_seen = int(meta["n_seen"])
        res.n_features = None if meta["n_features"] is None else int(meta["n_features"])
        res._filled = int(meta["filled"])
        res._head = int(meta["head"])
        res._w = float(meta["w"])
        res._next = int(meta["next"])
        res._queue_pos = np.asarray(arrays["queue_pos"], dtype=np.int64).reshape(-1)
        res._queue_slot = np.asarray(arrays["queue_slot"], dtype=np.int64).reshape(-1)
        if res._queue_pos.shape != res._queue_slot.shape:
            raise ValueError("reservoir queue arrays differ in length")
        if res.n_features is not None:
            data = np.asarray(arrays["data"], dtype=np.float64)
            if data.shape != (res._filled, res.n_features) or res._filled > res.size:
                raise ValueError(
                    f"reservoir data has shape {data.shape}, expected {(res._filled, res.n_features)} "
                    f"with at most size={res.size} rows")
            res._buf = np.empty((res.size, res.n_features))
            res._buf[:res._filled] = data
        return res

    def __repr__(self) -> str:
        return (f"Reservoir(size={self.size}, mode={self.mode!r}, n_seen={self.n_seen}, "
                f"n_kept={self._filled})")
