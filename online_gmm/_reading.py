"""A batch of exactly ``n`` good records gathered from a source's reads: shared by the one-process
pipeline and the scale-out workers, so both cut the same batches out of the same stream."""

from __future__ import annotations

from typing import Any

import numpy as np

from connectors.base import concat_columns

__all__ = ["GoodRecords"]


class GoodRecords:
    """Accumulates :class:`~connectors.base.Batch` reads until the good records are counted.

    Attributes
    ----------
    good, consumed : int
        Good records, and records in all (good and rejected), read so far.
    position : object
        The source's position after the last read (None before one).
    """

    def __init__(self) -> None:
        self._xs: list[np.ndarray] = []
        self._cols: list[dict[str, Any]] = []
        self._lens: list[int] = []
        self.rejects: list[Any] = []
        self.good = self.consumed = 0
        self.position: Any = None

    def add(self, b: Any) -> bool:
        """Take one read's batch; True if it held any record."""
        self.position = b.position
        if not b.n_records:
            return False
        n = b.X.shape[0]
        if n:
            self._xs.append(b.X)
            self._cols.append(b.columns)
            self._lens.append(n)
        self.rejects.extend(b.rejects)
        self.good += n
        self.consumed += b.n_records
        return True

    def batch(self) -> tuple[np.ndarray, dict[str, Any], list[Any], Any]:
        """``(X, columns, rejects, position)``: ``X`` of shape (good, n_features) (``(0, 0)`` when
        no record was good), ``columns`` a dict of arrays of length ``good``."""
        if not self._xs:
            X, columns = np.empty((0, 0)), {}
        elif len(self._xs) == 1:
            X, columns = self._xs[0], self._cols[0]
        else:
            X, columns = np.concatenate(self._xs), concat_columns(self._cols, self._lens)
        return X, columns, self.rejects, self.position
