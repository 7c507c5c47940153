"""Decoding and validation: raw records (bytes) to finite float vectors, with a reason for every reject.

Every decoder implements the :class:`Decoder` protocol::

    X, good, rejects = decoder.decode_many(raws)

``X`` is a float64 array of shape ``(len(good), n_features)``, ``good`` lists the indices into ``raws``
of the records that made it, and ``rejects`` lists ``(index, reason)`` for all the others.  Every
record ends up in exactly one of the two lists; a bad record never stops the good ones.  The only
exceptions ``decode_many`` raises are :class:`TypeError` when ``raws`` is not a sequence of bytes-like
objects (a programming error, not bad data).

Policy for missing and non-finite values
----------------------------------------
* ``missing="reject"`` (default): a missing field or a JSON ``null`` / empty CSV cell rejects the record.
* ``missing="nan"``: a missing field, ``null`` or empty cell becomes ``NaN`` (for models that marginalise
  missing features).  This is an explicit opt-in.
* A non-finite value *given literally* (JSON ``NaN``/``Infinity``, a number that overflows to ``inf``
  such as ``1e999``, CSV ``nan``/``inf``, a NaN or inf in a raw array) is **always** rejected, whatever
  ``missing`` says: NaN in the output therefore always means "absent", never "the producer computed NaN".
* Booleans are not numbers (``true`` is rejected, not read as 1.0); numeric strings in JSON
  (``"1.5"``) are rejected too: JSON numbers must be JSON numbers.

Examples
--------
>>> dec = JSONDecoder(["x", "pos.y"])
>>> X, good, rejects = dec.decode_many([b'{"x": 1, "pos": {"y": 2.5}}', b'{"x": true, "pos": {"y": 0}}'])
>>> X
array([[1. , 2.5]])
>>> good, rejects
([0], [(1, "field 'x' is a bool, not a number: True")])
"""

from __future__ import annotations

import json
import math
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from connectors._validate import ColumnsDecoder, _bad_utf8, _check_missing, _split_nonfinite, shorten
from connectors.csv_decoder import CSVDecoder

__all__ = ["Decoder", "JSONDecoder", "CSVDecoder", "RawArrayDecoder", "shorten"]


@runtime_checkable
class Decoder(Protocol):
    """What every decoder provides (agreed with the Kafka connector).

    Attributes
    ----------
    n_features : int or None
        Expected dimension (``None`` until known, for decoders that infer it).
    feature_names : list of str
        One name per feature, in column order of ``X``.
    """

    n_features: int | None
    feature_names: list[str]

    def decode_many(
        self, raws: Sequence[bytes]
    ) -> tuple[np.ndarray, list[int], list[tuple[int, str]]]:
        """Decode a batch of raw records.

        Parameters
        ----------
        raws : sequence of bytes, length n_records

        Returns
        -------
        X : ndarray of shape (n_good, n_features), float64
        good : list of int, length n_good
            Indices into ``raws`` of the good records, increasing.
        rejects : list of (int, str)
            Index into ``raws`` and reason, for every other record.
        """
        ...


class _NotFinite:
    """Placeholder the JSON parser returns for the literals NaN, Infinity and -Infinity."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


class JSONDecoder(ColumnsDecoder):
    """JSON objects to float vectors, fields chosen by name with dotted paths for nested objects.

    Parameters
    ----------
    fields : sequence of str or tuple of str
        One entry per feature.  ``"a.b.c"`` reads ``obj["a"]["b"]["c"]``; give a tuple
        (``("a.b",)``) for a key that itself contains a dot.
    missing : {"reject", "nan"}, default="reject"
        What a missing field or ``null`` does; see the module docstring.  Literal ``NaN``/``Infinity``
        values are rejected in both modes.
    carry : sequence of str or tuple of str, default=()
        Fields carried along unchanged with every good record (an event id, a timestamp, a key), named
        like ``fields``; :meth:`decode_columns` returns them as columns (absent: ``None``).  A carried
        field that is also a feature is carried as the feature's value, a float (``9`` becomes ``9.0``).

    Notes
    -----
    The input must be UTF-8 (strictly: invalid bytes, including lone surrogates, are rejected).  A
    batch is decoded by msgspec in one call over the joined lines into typed records (see
    :mod:`connectors._jsonblock` for why that call cannot mix up lines); the values go into the matrix
    in one pass.  Lines that call cannot take (a bad record, or anything unusual) are decoded one by
    one by the standard library's ``json``, which names the reason: both paths give the same values, so
    results do not depend on how records are batched.

    Examples
    --------
    >>> dec = JSONDecoder(["a", "b.c"], missing="nan")
    >>> X, good, rejects = dec.decode_many([b'{"a": 1, "b": {"c": null}}', b'{"a": NaN, "b": {"c": 1}}'])
    >>> X
    array([[ 1., nan]])
    >>> rejects
    [(1, "field 'a' is not finite: NaN")]
    """

    def __init__(self, fields: Sequence[str | tuple[str, ...]], *, missing: str = "reject",
                 carry: Sequence[str | tuple[str, ...]] = ()) -> None:
        if isinstance(fields, (str, bytes)) or not isinstance(fields, Sequence):
            raise TypeError(f"fields must be a sequence of field names, got {fields!r}")
        if len(fields) == 0:
            raise ValueError(f"fields must name at least one field, got {fields!r}")
        if isinstance(carry, (str, bytes)) or not isinstance(carry, Sequence):
            raise TypeError(f"carry must be a sequence of field names, got {carry!r}")
        paths = [_field_path(f, "field") for f in fields]
        carry_paths = [_field_path(f, "carry field") for f in carry]
        self.missing = _check_missing(missing)
        self.fields = list(fields)
        self.carry = list(carry)
        self._paths = paths
        self._carry_paths = carry_paths
        #: per carried path, the index of the feature it also is (None if it is not one)
        self._carry_feature = [paths.index(p) if p in paths else None for p in carry_paths]
        self.feature_names: list[str] = [".".join(p) for p in paths]
        self.carry_names: list[str] = [".".join(p) for p in carry_paths]
        self.n_features: int | None = len(paths)
        self._decode = json.JSONDecoder(parse_constant=_NotFinite).decode
        from connectors._jsonblock import BlockDecoder

        try:
            self._block: Any = BlockDecoder(paths, missing_nan=self.missing == "nan", carry=carry_paths)
        except ValueError:  # a path that is both a value and an object: only the careful path can say
            self._block = None

    def __repr__(self) -> str:
        extra = f", carry={self.carry!r}" if self.carry else ""
        return f"JSONDecoder({self.fields!r}, missing={self.missing!r}{extra})"

    def _slow(self, raw: bytes) -> list[float] | str:
        """Decode one record carefully: the values, or the reason it is rejected."""
        return self._careful(raw)[0]

    def _careful(self, raw: bytes) -> tuple[list[float] | str, Any]:
        """The values (or the reason the record is rejected) and the decoded object."""
        try:
            text = raw.decode("utf-8") if not isinstance(raw, str) else raw
        except UnicodeDecodeError as exc:
            return _bad_utf8(raw, exc), None
        except AttributeError:
            raise TypeError(f"raws must contain bytes, got {type(raw).__name__}: {shorten(raw)}") from None
        try:
            obj = self._decode(text)
        except json.JSONDecodeError as exc:
            return f"malformed JSON ({exc.msg} at char {exc.pos}): {shorten(raw)}", None
        except ValueError as exc:  # e.g. an integer literal beyond sys.get_int_max_str_digits()
            return f"malformed JSON ({shorten(str(exc), 80)}): {shorten(raw)}", None
        except RecursionError:
            return f"malformed JSON (nested too deeply): {shorten(raw)}", None
        if not isinstance(obj, dict):
            return f"not a JSON object: {shorten(obj)}", None
        nan_ok = self.missing == "nan"
        out: list[float] = []
        for name, path in zip(self.feature_names, self._paths):
            node: Any = obj
            for depth, key in enumerate(path):
                if not isinstance(node, dict):
                    parent = ".".join(path[:depth])
                    return f"field {name!r}: {parent!r} is not an object: {shorten(node)}", None
                if key not in node:
                    node = _ABSENT
                    break
                node = node[key]
            if node is _ABSENT or node is None:
                if nan_ok:
                    out.append(math.nan)
                    continue
                return f"field {name!r} is missing" if node is _ABSENT else f"field {name!r} is null", None
            t = type(node)
            if t is bool:
                return f"field {name!r} is a bool, not a number: {node!r}", None
            if t is _NotFinite:
                return f"field {name!r} is not finite: {node!r}", None
            if t is not float and t is not int:
                return f"field {name!r} is not a number: {shorten(node)}", None
            try:
                v = float(node)
            except OverflowError:
                return f"field {name!r} is too large for float64: {shorten(node)}", None
            if not math.isfinite(v):
                return f"field {name!r} is not finite: {shorten(node)}", None
            out.append(v)
        return out, obj

    def decode_columns(
        self, raws: Sequence[bytes]
    ) -> tuple[np.ndarray, list[int], list[tuple[int, str]], dict[str, np.ndarray]]:
        """Decode a batch, with the carried fields as columns.

        Parameters
        ----------
        raws : sequence of bytes, length n_records

        Returns
        -------
        X : ndarray of shape (n_good, n_features), float64
        good : list of int
        rejects : list of (int, str)
        carried : dict of str to ndarray of shape (n_good,), object
            One column per ``carry`` field, in ``carry`` order.
        """
        n, d = len(raws), len(self._paths)
        if self._block is not None and n:
            try:
                X, done, carried, left = self._block.decode(raws)
            except TypeError:
                bad = next((r for r in raws if not isinstance(r, (bytes, bytearray))), raws)
                raise TypeError(f"raws must contain bytes, got {type(bad).__name__}: {shorten(bad)}") from None
            if X.shape[0]:
                # msgspec refuses NaN/Infinity literals and out-of-range numbers; keep a cheap guard
                fin = np.isfinite(X) if self.missing == "reject" else ~np.isinf(X)
                ok = fin.all(axis=1)
                if not ok.all():
                    left = np.union1d(left, done[~ok])
                    X, done = X[ok], done[ok]
                    carried = [[v for v, k in zip(c, ok) if k] for c in carried]
        else:
            X, done, left = np.empty((0, d)), np.empty(0, np.int64), np.arange(n)
            carried = [[] for _ in self._carry_paths]
        if left.size == 0:
            return X, done.tolist(), [], self._carried_columns(carried)
        # the careful path, for the lines the block path left (bad ones, or unusual ones)
        rows: list[list[float]] = []
        slow_good: list[int] = []
        slow_carry: list[list[Any]] = [[] for _ in self._carry_paths]
        rejects: list[tuple[int, str]] = []
        for i in left.tolist():
            res, obj = self._careful(raws[i])
            if type(res) is str:
                rejects.append((i, res))
                continue
            rows.append(res)
            slow_good.append(i)
            for c, path, j in zip(slow_carry, self._carry_paths, self._carry_feature):
                value = _get_path(obj, path)
                c.append(res[j] if j is not None and value is not None else value)
        if not slow_good:
            return X, done.tolist(), rejects, self._carried_columns(carried)
        good = np.concatenate([done, np.asarray(slow_good, dtype=np.int64)])
        order = np.argsort(good, kind="stable")
        Xall = np.concatenate([X, np.asarray(rows, dtype=np.float64).reshape(len(rows), d)])[order]
        idx = order.tolist()
        carried = [[both[j] for j in idx] for both in (fast + slow for fast, slow in zip(carried, slow_carry))]
        return Xall, good[order].tolist(), rejects, self._carried_columns(carried)



def _field_path(f: Any, what: str) -> tuple[str, ...]:
    if isinstance(f, str) and f:
        path = tuple(f.split("."))
    elif isinstance(f, tuple) and f and all(isinstance(k, str) for k in f):
        path = f
    else:
        raise ValueError(f"each {what} must be a non-empty str or tuple of str, got {f!r}")
    if any(k == "" for k in path):
        raise ValueError(f"{what} {f!r} has an empty path component")
    return path


def _get_path(obj: Any, path: tuple[str, ...]) -> Any:
    """``obj[path[0]][path[1]]...``, or None where a key is absent or a node is not an object."""
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


_ABSENT = _Absent()


_RAW_DTYPES = {"float64": np.dtype("<f8"), "float32": np.dtype("<f4")}


class RawArrayDecoder:
    """Raw little-endian float arrays (``n_features`` values per record) to float64 vectors.

    Parameters
    ----------
    n_features : int
        Values per record; a record must be exactly ``n_features * itemsize`` bytes long.
    dtype : {"float64", "float32"}, default="float64"
        Little-endian element type of the records.
    feature_names : sequence of str, optional
        Defaults to ``["x0", "x1", ...]``.

    Examples
    --------
    >>> import numpy as np
    >>> dec = RawArrayDecoder(2)
    >>> X, good, rejects = dec.decode_many([np.array([1.0, 2.0]).tobytes(), b"short"])
    >>> X, good, rejects
    (array([[1., 2.]]), [0], [(1, 'expected 16 bytes (2 float64 values), got 5')])
    """

    def __init__(
        self, n_features: int, *, dtype: str = "float64", feature_names: Sequence[str] | None = None
    ) -> None:
        if isinstance(n_features, bool) or not isinstance(n_features, (int, np.integer)) or n_features < 1:
            raise ValueError(f"n_features must be a positive int, got {n_features!r}")
        if dtype not in _RAW_DTYPES:
            raise ValueError(f"dtype must be one of {tuple(_RAW_DTYPES)!r}, got {dtype!r}")
        self.n_features: int | None = int(n_features)
        self.dtype = dtype
        self._dtype = _RAW_DTYPES[dtype]
        self._nbytes = self.n_features * self._dtype.itemsize
        if feature_names is None:
            feature_names = [f"x{i}" for i in range(self.n_features)]
        if len(feature_names) != self.n_features:
            raise ValueError(
                f"feature_names must have n_features={self.n_features} entries, got {feature_names!r}"
            )
        self.feature_names: list[str] = [str(f) for f in feature_names]

    def __repr__(self) -> str:
        return f"RawArrayDecoder({self.n_features!r}, dtype={self.dtype!r})"

    def decode_many(
        self, raws: Sequence[bytes]
    ) -> tuple[np.ndarray, list[int], list[tuple[int, str]]]:
        """Decode a batch; see :class:`Decoder`.

        Parameters
        ----------
        raws : sequence of bytes, length n_records

        Returns
        -------
        X : ndarray of shape (n_good, n_features), float64
        good : list of int
        rejects : list of (int, str)
        """
        size = self._nbytes
        good: list[int] = []
        parts: list[bytes] = []
        rejects: list[tuple[int, str]] = []
        for i, raw in enumerate(raws):
            if not isinstance(raw, (bytes, bytearray, memoryview)):
                raise TypeError(f"raws must contain bytes, got {type(raw).__name__}: {shorten(raw)}")
            n = len(raw) if not isinstance(raw, memoryview) else raw.nbytes
            if n == size:
                parts.append(raw)
                good.append(i)
            else:
                rejects.append(
                    (i, f"expected {size} bytes ({self.n_features} {self.dtype} values), got {n}")
                )
        X = np.frombuffer(b"".join(parts), dtype=self._dtype).reshape(len(good), self.n_features)
        X = X.astype(np.float64)  # a copy: never a view on the caller's bytes
        return _split_nonfinite(X, good, [], rejects, self.feature_names, "feature")
