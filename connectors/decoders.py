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
    carry : sequence of str or tuple of str, default=()
        Fields carried along unchanged with every good record (an event id, a timestamp, a key), named
        like ``fields``; :meth:`decode_columns` returns them as columns (absent: ``None``).

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
        X, good, rejects, _ = self.decode_columns(raws)
        return X, good, rejects

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
            for c, path in zip(slow_carry, self._carry_paths):
                c.append(_get_path(obj, path))
        if not slow_good:
            return X, done.tolist(), rejects, self._carried_columns(carried)
        good = np.concatenate([done, np.asarray(slow_good, dtype=np.int64)])
        order = np.argsort(good, kind="stable")
        Xall = np.concatenate([X, np.asarray(rows, dtype=np.float64).reshape(len(rows), d)])[order]
        carried = [[(fast + slow)[j] for j in order.tolist()] for fast, slow in zip(carried, slow_carry)]
        return Xall, good[order].tolist(), rejects, self._carried_columns(carried)

    def _carried_columns(self, carried: list[list[Any]]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for name, values in zip(self.carry_names, carried):
            col = np.empty(len(values), dtype=object)
            col[:] = values
            out[name] = col
        return out


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
    carry : sequence of str or int, default=()
        Columns carried along as text with every good record (an event id, a timestamp);
        :meth:`decode_columns` returns them as columns.

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
        carry: Sequence[str | int] = (),
    ) -> None:
        if isinstance(carry, (str, bytes)) or not isinstance(carry, Sequence):
            raise TypeError(f"carry must be a sequence of column names or indices, got {carry!r}")
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
        self.carry = list(carry)
        idx = self._resolve(self.columns)
        self._carry_idx = self._resolve(self.carry)
        self.carry_names: list[str] = [
            self.header[i] if self.header is not None else str(c) for c, i in zip(self.carry, self._carry_idx)
        ]
        self._idx = idx
        self._width = None if self.header is None else len(self.header)
        self._min_width = max(idx + self._carry_idx) + 1
        self.feature_names: list[str] = [
            self.header[i] if self.header is not None else str(c) for c, i in zip(self.columns, idx)
        ]
        self.n_features: int | None = len(idx)
        self._usecols = tuple(idx)
        self._bdelim = delimiter.encode()
        self._bquote = quotechar.encode()

    def _resolve(self, columns: Sequence[str | int]) -> list[int]:
        """0-based indices of columns given by name or index (ValueError naming a bad one)."""
        idx: list[int] = []
        for c in columns:
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
        return idx

    def __repr__(self) -> str:
        return (
            f"CSVDecoder({self.columns!r}, header={self.header!r}, delimiter={self.delimiter!r}, "
            f"quotechar={self.quotechar!r}, missing={self.missing!r})"
        )

    def with_header(self, header: Sequence[str]) -> "CSVDecoder":
        """The same decoder bound to ``header`` (raises ValueError if a named column is absent)."""
        return CSVDecoder(
            self.columns, header=header, delimiter=self.delimiter, quotechar=self.quotechar,
            missing=self.missing, carry=self.carry,
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

    def _fast(self, raws: Sequence[bytes]) -> tuple[np.ndarray, list[list[str]]] | None:
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
            got = self._fast_arrow(arrow, block, n)
            if got is not None:
                return got
        if self._carry_idx:
            return None
        try:
            X = np.loadtxt(
                io.StringIO(text), delimiter=self.delimiter, comments=None, quotechar=None,
                usecols=self._usecols, dtype=np.float64, ndmin=2,
            )
        except (ValueError, IndexError):
            return None
        if X.shape != (n, len(self._idx)):
            return None
        return X, []

    def _fast_arrow(self, arrow: Any, block: bytes, n: int) -> tuple[np.ndarray, list[list[str]]] | None:
        pa, pcsv = arrow
        width = self._width
        if width is None:
            first = block[: block.find(b"\n")] if n > 1 else block
            width = first.count(self._bdelim) + 1
            if width <= max(self._idx + self._carry_idx):
                return None
        names = [f"c{i}" for i in range(width)]
        wanted = [f"c{i}" for i in self._idx]
        carried = [f"c{i}" for i in self._carry_idx]
        types = {c: pa.string() for c in carried}
        types.update({c: pa.float64() for c in wanted})
        try:
            table = pcsv.read_csv(
                pa.py_buffer(block),
                read_options=pcsv.ReadOptions(use_threads=False, column_names=names, block_size=max(1 << 20, len(block) + 1)),
                parse_options=pcsv.ParseOptions(delimiter=self.delimiter, quote_char=False, double_quote=False,
                                                escape_char=False, newlines_in_values=False, ignore_empty_lines=False),
                convert_options=pcsv.ConvertOptions(
                    column_types=types, include_columns=list(dict.fromkeys(wanted + carried)),
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
        return X, [table.column(c).to_pylist() for c in carried]

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
        X, good, rejects, _ = self.decode_columns(raws)
        return X, good, rejects

    def decode_columns(
        self, raws: Sequence[bytes]
    ) -> tuple[np.ndarray, list[int], list[tuple[int, str]], dict[str, np.ndarray]]:
        """Decode a batch, with the carried columns (text, object arrays of length n_good)."""
        n = len(raws)
        d = len(self._idx)
        if n == 0:
            return np.empty((0, d)), [], [], self._carried([[] for _ in self._carry_idx])
        got = self._fast(raws) if n > 1 or self._width is not None else None
        if got is not None:
            X, carried = got
            ok = np.isfinite(X).all(axis=1)
            if ok.all():
                return X, list(range(n)), [], self._carried(carried)
            # Some literal nan/inf: let the row-by-row path name them.
        flat: list[float] = []
        good: list[int] = []
        rejects: list[tuple[int, str]] = []
        carried = [[] for _ in self._carry_idx]
        for i, raw in enumerate(raws):
            res = self._slow(raw)
            if type(res) is str:
                rejects.append((i, res))
            else:
                flat += res
                good.append(i)
                if self._carry_idx:
                    cells = self.split_row(raw)
                    for c, j in zip(carried, self._carry_idx):
                        c.append(cells[j] if j < len(cells) else None)
        return np.array(flat, dtype=np.float64).reshape(len(good), d), good, rejects, self._carried(carried)

    def _carried(self, carried: list[list[Any]]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for name, values in zip(self.carry_names, carried):
            col = np.empty(len(values), dtype=object)
            col[:] = values
            out[name] = col
        return out


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
