"""Validation helpers shared by the decoders: short reprs for reasons, the missing-value policy,
non-finite rows moved to the rejects."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from connectors.base import object_column

__all__ = ["shorten"]

_MISSING_OPTIONS = ("reject", "nan")
_SHORT = 60


def shorten(value: Any, limit: int = _SHORT) -> str:
    """``repr(value)`` cut to at most ``limit`` characters (with ``...``), for reject reasons.

    >>> shorten("x" * 100, 10)
    "'xxxxxx..."
    """
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def _check_missing(missing: Any) -> str:
    if missing not in _MISSING_OPTIONS:
        raise ValueError(f"missing must be one of {_MISSING_OPTIONS!r}, got {missing!r}")
    return missing


def _bad_utf8(raw: bytes, exc: UnicodeDecodeError) -> str:
    return f"invalid UTF-8 at byte {exc.start}: {shorten(bytes(raw[max(0, exc.start - 10): exc.start + 10]))}"


def _finite_rows(X: np.ndarray, trusted: list[int]) -> np.ndarray:
    """Boolean mask of rows of X that are all finite; rows listed in ``trusted`` count as finite."""
    ok = np.isfinite(X).all(axis=1)
    if trusted:
        ok[trusted] = True
    return ok


def _split_nonfinite(
    X: np.ndarray,
    good: list[int],
    trusted: list[int],
    rejects: list[tuple[int, str]],
    names: list[str],
    what: str,
) -> tuple[np.ndarray, list[int], list[tuple[int, str]]]:
    """Move rows with a non-finite value (not in ``trusted``) from (X, good) to rejects."""
    ok = _finite_rows(X, trusted)
    if ok.all():
        return X, good, rejects
    for row in np.flatnonzero(~ok):
        col = int(np.flatnonzero(~np.isfinite(X[row]))[0])
        rejects.append((good[row], f"{what} {names[col]!r} is not finite: {float(X[row, col])!r}"))
    rejects.sort()
    good = [g for g, k in zip(good, ok) if k]
    return X[ok], good, rejects


class ColumnsDecoder:
    """What the decoders with carried fields share: ``decode_many`` from ``decode_columns``, and the
    carried values as object columns (subclasses set ``carry_names`` and define ``decode_columns``)."""

    carry_names: list[str]

    def decode_columns(
        self, raws: Sequence[bytes]
    ) -> tuple[np.ndarray, list[int], list[tuple[int, str]], dict[str, np.ndarray]]:
        raise NotImplementedError

    def decode_many(
        self, raws: Sequence[bytes]
    ) -> tuple[np.ndarray, list[int], list[tuple[int, str]]]:
        """Decode a batch (see :class:`connectors.decoders.Decoder`), without the carried columns.

        Parameters
        ----------
        raws : sequence of bytes, length n_records

        Returns
        -------
        X : ndarray of shape (n_good, n_features), float64
        good : list of int
        rejects : list of (int, str)
        """
        X, good, rejects, _ = self.decode_columns(raws)
        return X, good, rejects

    def _carried_columns(self, carried: list[list[Any]]) -> dict[str, np.ndarray]:
        """One object column per carried name, from one list (or object array) of values per name."""
        return {name: values if isinstance(values, np.ndarray) and values.dtype == object else object_column(values)
                for name, values in zip(self.carry_names, carried)}
