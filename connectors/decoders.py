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

import csv
import io
import json
import math
from itertools import repeat
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

__all__ = ["Decoder", "JSONDecoder", "CSVDecoder", "RawArrayDecoder", "shorten"]

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


class JSONDecoder:
    """JSON objects to float vectors, fields chosen by name with dotted paths for nested objects.

    Parameters
    ----------
    fields : sequence of str or tuple of str
        One entry per feature.  ``"a.b.c"`` reads ``obj["a"]["b"]["c"]``; give a tuple
        (``("a.b",)``) for a key that itself contains a dot.
    missing : {"reject", "nan"}, default="reject"
        What a missing field or ``null`` does; see the module docstring.  Literal ``NaN``/``Infinity``
        values are rejected in both modes.

    Notes
    -----
    The input must be UTF-8 (strictly: invalid bytes, including lone surrogates, are rejected).  The
    parser is the standard library's C ``json`` scanner; field extraction is compiled once into a
    single Python expression, and values are collected in one flat list converted to an array once
    per call, so a record costs little more than ``json.loads``.

    Examples
    --------
    >>> dec = JSONDecoder(["a", "b.c"], missing="nan")
    >>> X, good, rejects = dec.decode_many([b'{"a": 1, "b": {"c": null}}', b'{"a": NaN, "b": {"c": 1}}'])
    >>> X
    array([[ 1., nan]])
    >>> rejects
    [(1, "field 'a' is not finite: NaN")]
    """

    def __init__(self, fields: Sequence[str | tuple[str, ...]], *, missing: str = "reject") -> None:
        if isinstance(fields, (str, bytes)) or not isinstance(fields, Sequence):
            raise TypeError(f"fields must be a sequence of field names, got {fields!r}")
        if len(fields) == 0:
            raise ValueError(f"fields must name at least one field, got {fields!r}")
        paths: list[tuple[str, ...]] = []
        for f in fields:
            if isinstance(f, str) and f:
                path = tuple(f.split("."))
            elif isinstance(f, tuple) and f and all(isinstance(k, str) for k in f):
                path = f
            else:
                raise ValueError(f"each field must be a non-empty str or tuple of str, got {f!r}")
            if any(k == "" for k in path):
                raise ValueError(f"field {f!r} has an empty path component")
            paths.append(path)
        self.missing = _check_missing(missing)
        self.fields = list(fields)
        self._paths = paths
        self.feature_names: list[str] = [".".join(p) for p in paths]
        self.n_features: int | None = len(paths)
        self._decode = json.JSONDecoder(parse_constant=_NotFinite).decode
        # One compiled expression extracting every field; any failure falls back to the slow path.
        items = ", ".join("o" + "".join(f"[{k!r}]" for k in p) for p in paths)
        self._extract = eval(f"lambda o: ({items},)", {})  # noqa: S307 - keys are repr()'d literals
        checks = " and ".join(f"(type(v[{i}]) is float or type(v[{i}]) is int)" for i in range(len(paths)))
        self._numeric = eval(f"lambda v: {checks}", {})  # noqa: S307

    def __repr__(self) -> str:
        return f"JSONDecoder({self.fields!r}, missing={self.missing!r})"

    def _slow(self, raw: bytes) -> list[float] | str:
        """Decode one record carefully: the values, or the reason it is rejected."""
        try:
            text = raw.decode("utf-8") if not isinstance(raw, str) else raw
        except UnicodeDecodeError as exc:
            return _bad_utf8(raw, exc)
        except AttributeError:
            raise TypeError(f"raws must contain bytes, got {type(raw).__name__}: {shorten(raw)}") from None
        try:
            obj = self._decode(text)
        except json.JSONDecodeError as exc:
            return f"malformed JSON ({exc.msg} at char {exc.pos}): {shorten(raw)}"
        except ValueError as exc:  # e.g. an integer literal beyond sys.get_int_max_str_digits()
            return f"malformed JSON ({shorten(str(exc), 80)}): {shorten(raw)}"
        except RecursionError:
            return f"malformed JSON (nested too deeply): {shorten(raw)}"
        if not isinstance(obj, dict):
            return f"not a JSON object: {shorten(obj)}"
        nan_ok = self.missing == "nan"
        out: list[float] = []
        for name, path in zip(self.feature_names, self._paths):
            node: Any = obj
            for depth, key in enumerate(path):
                if not isinstance(node, dict):
                    parent = ".".join(path[:depth])
                    return f"field {name!r}: {parent!r} is not an object: {shorten(node)}"
                if key not in node:
                    node = _ABSENT
                    break
                node = node[key]
            if node is _ABSENT or node is None:
                if nan_ok:
                    out.append(math.nan)
                    continue
                return f"field {name!r} is missing" if node is _ABSENT else f"field {name!r} is null"
            t = type(node)
            if t is bool:
                return f"field {name!r} is a bool, not a number: {node!r}"
            if t is _NotFinite:
                return f"field {name!r} is not finite: {node!r}"
            if t is not float and t is not int:
                return f"field {name!r} is not a number: {shorten(node)}"
            try:
                v = float(node)
            except OverflowError:
                return f"field {name!r} is too large for float64: {shorten(node)}"
            if not math.isfinite(v):
                return f"field {name!r} is not finite: {shorten(node)}"
            out.append(v)
        return out

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
        decode, extract, numeric, slow = self._decode, self._extract, self._numeric, self._slow
        flat: list[Any] = []
        good: list[int] = []
        trusted: list[int] = []  # rows validated by the slow path (may hold NaN for missing)
        rejects: list[tuple[int, str]] = []
        i = 0
        for raw in raws:
            try:
                v = extract(decode(raw.decode("utf-8")))
                if numeric(v):
                    flat += v
                    good.append(i)
                    i += 1
                    continue
            except Exception:  # noqa: BLE001 - any failure: diagnose on the slow path
                pass
            res = slow(raw)
            if type(res) is str:
                rejects.append((i, res))
            else:
                trusted.append(len(good))
                flat += res
                good.append(i)
            i += 1
        d = len(self._paths)
        try:
            X = np.array(flat, dtype=np.float64).reshape(len(good), d)
        except OverflowError:  # an integer beyond float64: find it row by row
            X, good, rejects, trusted = self._rows_one_by_one(flat, good, rejects, trusted)
        return _split_nonfinite(X, good, trusted, rejects, self.feature_names, "field")

    def _rows_one_by_one(self, flat, good, rejects, trusted):
        d = len(self._paths)
        rows, keep, keep_trusted = [], [], []
        for r, idx in enumerate(good):
            vals = flat[r * d: (r + 1) * d]
            try:
                rows.append([float(v) for v in vals])
            except OverflowError:
                col = next(c for c, v in enumerate(vals) if isinstance(v, int) and abs(v) > 1e308)
                rejects.append(
                    (idx, f"field {self.feature_names[col]!r} is too large for float64: {shorten(vals[col])}")
                )
                continue
            if r in trusted:
                keep_trusted.append(len(keep))
            keep.append(idx)
        rejects.sort()
        X = np.array(rows, dtype=np.float64).reshape(len(keep), d)
        return X, keep, rejects, keep_trusted


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


_ABSENT = _Absent()


class CSVDecoder:
    """One CSV row per record to a float vector.

    Parameters
    ----------
    columns : sequence of str or int
        The columns to read, by header name (needs ``header``) or by 0-based index.
    header : sequence of str, optional
        Column names of the rows, to resolve names in ``columns`` and to check the row width.  File
        sources pass each file's first line here through :meth:`with_header`.
    delimiter : str, default=","
        A single character.
    quotechar : str, default='"'
        A single character; rows containing it are parsed with the :mod:`csv` module.
    missing : {"reject", "nan"}, default="reject"
        What an empty cell (or a row too short to hold a column) does; see the module docstring.
        Literal ``nan``/``inf`` cells are always rejected.

    Notes
    -----
    When a header is known, every row must have exactly as many cells as the header (a row with an
    extra delimiter is rejected rather than read shifted).  Values are parsed as Python floats,
    except that underscores (``1_000``) are rejected; surrounding spaces are allowed.  A batch of
    clean rows is parsed in one call to a C parser; any problem sends the batch down a
    row-by-row path that finds the culprit, so results do not depend on how records are batched.
    The batch parser is pyarrow's CSV reader (single-threaded) when pyarrow is installed, else
    :func:`numpy.loadtxt`.

    Examples
    --------
    >>> dec = CSVDecoder(["b", "c"], header=["a", "b", "c"])
    >>> X, good, rejects = dec.decode_many([b"x,1,2", b"y,3,oops", b"z,5,6"])
    >>> X
    array([[1., 2.],
           [5., 6.]])
    >>> rejects
    [(1, "column 'c' is not a number: 'oops'")]
    """

    def __init__(
        self,
        columns: Sequence[str | int],
        *,
        header: Sequence[str] | None = None,
        delimiter: str = ",",
        quotechar: str = '"',
        missing: str = "reject",
    ) -> None:
        if isinstance(columns, (str, bytes)) or not isinstance(columns, Sequence) or len(columns) == 0:
            raise ValueError(f"columns must be a non-empty sequence of names or indices, got {columns!r}")
        for name, ch in (("delimiter", delimiter), ("quotechar", quotechar)):
            if not isinstance(ch, str) or len(ch) != 1 or ch in "\r\n":
                raise ValueError(f"{name} must be a single character other than a newline, got {ch!r}")
        if delimiter == quotechar:
            raise ValueError(f"delimiter and quotechar must differ, both are {delimiter!r}")
        self.columns = list(columns)
        self.header = None if header is None else [str(h).strip() for h in header]
        self.delimiter = delimiter
        self.quotechar = quotechar
        self.missing = _check_missing(missing)
        idx: list[int] = []
        for c in self.columns:
            if isinstance(c, bool) or not isinstance(c, (int, str)):
                raise ValueError(f"each column must be a str name or an int index, got {c!r}")
            if isinstance(c, int):
                if c < 0 or (self.header is not None and c >= len(self.header)):
                    width = "any" if self.header is None else len(self.header)
                    raise ValueError(f"column index {c!r} is out of range for a row of {width} columns")
                idx.append(c)
            else:
                if self.header is None:
                    raise ValueError(
                        f"column {c!r} is given by name, so header must be given; got header=None"
                    )
                if c not in self.header:
                    raise ValueError(f"column {c!r} is not in the header {shorten(self.header, 200)}")
                idx.append(self.header.index(c))
        self._idx = idx
        self._width = None if self.header is None else len(self.header)
        self._min_width = max(idx) + 1
        self.feature_names: list[str] = [
            self.header[i] if self.header is not None else str(c) for c, i in zip(self.columns, idx)
        ]
        self.n_features: int | None = len(idx)
        self._usecols = tuple(idx)
        self._bdelim = delimiter.encode()
        self._bquote = quotechar.encode()

    def __repr__(self) -> str:
        return (
            f"CSVDecoder({self.columns!r}, header={self.header!r}, delimiter={self.delimiter!r}, "
            f"quotechar={self.quotechar!r}, missing={self.missing!r})"
        )

    def with_header(self, header: Sequence[str]) -> "CSVDecoder":
        """The same decoder bound to ``header`` (raises ValueError if a named column is absent)."""
        return CSVDecoder(
            self.columns, header=header, delimiter=self.delimiter, quotechar=self.quotechar,
            missing=self.missing,
        )

    def split_row(self, raw: bytes) -> list[str]:
        """Cells of one row (as text), honouring quotes. Raises UnicodeDecodeError / csv.Error."""
        text = raw.decode("utf-8")
        if text.endswith("\r"):
            text = text[:-1]
        if self.quotechar not in text:
            return text.split(self.delimiter)
        rows = list(csv.reader([text], delimiter=self.delimiter, quotechar=self.quotechar, strict=True))
        return rows[0] if rows else []

    def _slow(self, raw: bytes) -> list[float] | str:
        try:
            cells = self.split_row(raw)
        except UnicodeDecodeError as exc:
            return _bad_utf8(raw, exc)
        except AttributeError:
            raise TypeError(f"raws must contain bytes, got {type(raw).__name__}: {shorten(raw)}") from None
        except csv.Error as exc:
            return f"malformed CSV row ({exc}): {shorten(raw)}"
        if self._width is not None and len(cells) != self._width:
            return f"expected {self._width} cells as in the header, got {len(cells)}: {shorten(raw)}"
        nan_ok = self.missing == "nan"
        out: list[float] = []
        for name, i in zip(self.feature_names, self._idx):
            if i >= len(cells) or not cells[i].strip():
                if nan_ok:
                    out.append(math.nan)
                    continue
                what = "missing" if i >= len(cells) else "empty"
                return f"column {name!r} is {what}"
            cell = cells[i]
            try:
                if "_" in cell:
                    raise ValueError
                v = float(cell)
            except ValueError:
                return f"column {name!r} is not a number: {shorten(cell)}"
            if not math.isfinite(v):
                return f"column {name!r} is not finite: {shorten(cell.strip())}"
            out.append(v)
        return out

    def _fast(self, raws: Sequence[bytes]) -> np.ndarray | None:
        """All rows at once through a C parser (pyarrow if installed, else numpy.loadtxt), or None
        if anything looks unusual (then the row-by-row path decides, so results never differ)."""
        try:
            block = b"\n".join(raws)
        except TypeError:
            return None
        if self._bquote in block or b"_" in block or b"\r" in block:
            return None
        n = len(raws)
        if block.count(b"\n") != n - 1:
            return None  # a record with an embedded newline
        if self._width is not None and set(map(bytes.count, raws, repeat(self._bdelim))) != {self._width - 1}:
            return None
        try:
            text = block.decode("utf-8")
        except (UnicodeDecodeError, AttributeError):
            return None
        arrow = _arrow_csv()
        if arrow is not None:
            X = self._fast_arrow(arrow, block, n)
            if X is not None:
                return X
        try:
            X = np.loadtxt(
                io.StringIO(text), delimiter=self.delimiter, comments=None, quotechar=None,
                usecols=self._usecols, dtype=np.float64, ndmin=2,
            )
        except (ValueError, IndexError):
            return None
        if X.shape != (n, len(self._idx)):
            return None
        return X

    def _fast_arrow(self, arrow: Any, block: bytes, n: int) -> np.ndarray | None:
        pa, pcsv = arrow
        width = self._width
        if width is None:
            first = block[: block.find(b"\n")] if n > 1 else block
            width = first.count(self._bdelim) + 1
            if width <= max(self._idx):
                return None
        names = [f"c{i}" for i in range(width)]
        wanted = [f"c{i}" for i in self._idx]
        try:
            table = pcsv.read_csv(
                pa.py_buffer(block),
                read_options=pcsv.ReadOptions(use_threads=False, column_names=names, block_size=max(1 << 20, len(block) + 1)),
                parse_options=pcsv.ParseOptions(delimiter=self.delimiter, quote_char=False, double_quote=False,
                                                escape_char=False, newlines_in_values=False, ignore_empty_lines=False),
                convert_options=pcsv.ConvertOptions(
                    column_types={c: pa.float64() for c in set(wanted)}, include_columns=list(dict.fromkeys(wanted)),
                    null_values=[], strings_can_be_null=False, quoted_strings_can_be_null=False,
                ),
            )
        except (pa.ArrowInvalid, pa.ArrowException, ValueError):
            return None
        if table.num_rows != n:
            return None
        X = np.empty((n, len(wanted)), dtype=np.float64)
        for j, c in enumerate(wanted):
            X[:, j] = table.column(c).to_numpy()
        return X

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
        n = len(raws)
        d = len(self._idx)
        if n == 0:
            return np.empty((0, d)), [], []
        X = self._fast(raws) if n > 1 or self._width is not None else None
        if X is not None:
            ok = np.isfinite(X).all(axis=1)
            if ok.all():
                return X, list(range(n)), []
            # Some literal nan/inf: let the row-by-row path name them.
        flat: list[float] = []
        good: list[int] = []
        rejects: list[tuple[int, str]] = []
        for i, raw in enumerate(raws):
            res = self._slow(raw)
            if type(res) is str:
                rejects.append((i, res))
            else:
                flat += res
                good.append(i)
        return np.array(flat, dtype=np.float64).reshape(len(good), d), good, rejects


_ARROW: list[Any] = []


def _arrow_csv() -> Any:
    """(pyarrow, pyarrow.csv) if pyarrow is installed (an optional accelerator), else None."""
    if not _ARROW:
        try:
            import pyarrow
            import pyarrow.csv

            _ARROW.append((pyarrow, pyarrow.csv))
        except ImportError:  # pragma: no cover - depends on the environment
            _ARROW.append(None)
    return _ARROW[0]


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
