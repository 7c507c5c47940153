"""CSV rows to float vectors: :class:`CSVDecoder` (a batch parsed by pyarrow's CSV reader when
installed, else :func:`numpy.loadtxt`; a row-by-row path names the reason of every bad row).

See :mod:`connectors.decoders` for the policy on missing and non-finite values.
"""

from __future__ import annotations

import csv
import io
import math
from itertools import repeat
from typing import Any, Sequence

import numpy as np

from connectors._validate import ColumnsDecoder, _bad_utf8, _check_missing, shorten

__all__ = ["CSVDecoder"]


class CSVDecoder(ColumnsDecoder):
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

    def _fast(self, raws: Sequence[bytes]) -> tuple[np.ndarray, list[Any]] | None:
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
        if not block.isascii():       # ASCII is UTF-8: only other blocks need the (slower) check
            try:
                block.decode("utf-8")
            except UnicodeDecodeError:
                return None
        arrow = _arrow_csv()
        if arrow is not None:
            # pyarrow refuses a row with another number of cells than the width (ArrowInvalid)
            got = self._fast_arrow(arrow, block, n)
            if got is not None:
                return got
        if self._carry_idx:
            return None
        if self._width is not None and set(map(bytes.count, raws, repeat(self._bdelim))) != {self._width - 1}:
            return None
        try:
            X = np.loadtxt(
                io.StringIO(block.decode("utf-8")), delimiter=self.delimiter, comments=None, quotechar=None,
                usecols=self._usecols, dtype=np.float64, ndmin=2,
            )
        except (ValueError, IndexError):
            return None
        if X.shape != (n, len(self._idx)):
            return None
        return X, []

    def _fast_arrow(self, arrow: Any, block: bytes, n: int) -> tuple[np.ndarray, list[Any]] | None:
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
        return X, [table.column(c).to_numpy(zero_copy_only=False) for c in carried]  # object arrays of str

    def decode_columns(
        self, raws: Sequence[bytes]
    ) -> tuple[np.ndarray, list[int], list[tuple[int, str]], dict[str, np.ndarray]]:
        """Decode a batch, with the carried columns (text, object arrays of length n_good)."""
        n = len(raws)
        d = len(self._idx)
        if n == 0:
            return np.empty((0, d)), [], [], self._carried_columns([[] for _ in self._carry_idx])
        got = self._fast(raws) if n > 1 or self._width is not None else None
        if got is not None:
            X, carried = got
            ok = np.isfinite(X).all(axis=1)
            if ok.all():
                return X, list(range(n)), [], self._carried_columns(carried)
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
        return np.array(flat, dtype=np.float64).reshape(len(good), d), good, rejects, self._carried_columns(carried)



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
