"""Columns (:data:`connectors.base.Columns`) as Arrow arrays, and the Arrow type rules of the Parquet sink.

Kept apart from :mod:`connectors.parquet_sink` (which manages the part files): converting a batch's
columns and choosing how each is encoded are the sink's per-batch costs, measured on their own by
``benchmarks/bench_files.py``.
"""

from __future__ import annotations

import ctypes
from typing import Any, Sequence

import numpy as np

from connectors.base import ConnectorError, DictColumn
from connectors.decoders import shorten


def _castable(src: Any, dst: Any) -> bool:
    """Whether values of Arrow type ``src`` may be cast into a column of type ``dst`` without loss of meaning.

    Same type; null into anything; integers into integers or floats; floats into floats; strings into
    strings; lists and maps element by element.
    """
    import pyarrow as pa

    t = pa.types
    if src == dst or t.is_null(src):
        return True
    if t.is_integer(src):
        return t.is_integer(dst) or t.is_floating(dst)
    if t.is_floating(src):
        return t.is_floating(dst)
    if (t.is_string(src) or t.is_large_string(src)) and (t.is_string(dst) or t.is_large_string(dst)):
        return True
    if t.is_map(src) and t.is_map(dst):
        return _castable(src.key_type, dst.key_type) and _castable(src.item_type, dst.item_type)
    lists = (t.is_list, t.is_large_list, t.is_fixed_size_list)
    if any(f(src) for f in lists) and any(f(dst) for f in lists):
        return _castable(src.value_type, dst.value_type)
    return False


def _unify(a: Any, b: Any) -> Any:
    """The narrowest Arrow type both ``a`` and ``b`` cast into without loss (None if there is none).

    null with T gives T; integers with integers int64, with floats float64; lists and maps element by
    element.
    """
    import pyarrow as pa

    t = pa.types
    if a == b or t.is_null(b):
        return a
    if t.is_null(a):
        return b
    numeric = (lambda x: t.is_integer(x) or t.is_floating(x))
    if numeric(a) and numeric(b):
        return pa.int64() if t.is_integer(a) and t.is_integer(b) else pa.float64()
    if t.is_map(a) and t.is_map(b):
        key, item = _unify(a.key_type, b.key_type), _unify(a.item_type, b.item_type)
        return None if key is None or item is None else pa.map_(key, item)
    if t.is_list(a) and t.is_list(b):
        value = _unify(a.value_type, b.value_type)
        return None if value is None else pa.list_(value)
    return a if _castable(b, a) else (b if _castable(a, b) else None)


def _settled(typ: Any) -> Any:
    """``typ`` with every null type (a column, list or map value with no value yet) made float64."""
    import pyarrow as pa

    t = pa.types
    if t.is_null(typ):
        return pa.float64()
    if t.is_map(typ):
        return pa.map_(_settled(typ.key_type), _settled(typ.item_type))
    if t.is_list(typ):
        return pa.list_(_settled(typ.value_type))
    return typ


def _as_read_back(schema: Any) -> Any:
    """``schema`` as a Parquet reader gives it back (e.g. a list's value field is named ``element``).

    A sink that resumes takes its schema from its last part; taking the first batch's schema through
    the same round trip makes both write byte-identical files.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = pa.BufferOutputStream()
    pq.write_table(schema.empty_table(), buf)
    return pq.read_schema(pa.BufferReader(buf.getvalue())).remove_metadata()


def _constant_string(values: np.ndarray) -> Any:
    """``values`` (an object column) as an Arrow string array if every value is one same str, else None.

    The pipeline's position columns (``source``, ``file``) hold one object n times: built from its
    bytes repeated, the column costs about 40 us instead of pyarrow's conversion of each object (about
    80 ns a value).  "One same str" is checked on the object pointers (a few microseconds); a column of
    equal but distinct str objects takes the general path.
    """
    import pyarrow as pa

    n = values.shape[0]
    first = values[0] if n else None
    if not isinstance(first, str) or values[-1] is not first or values[n // 2] is not first:
        return None
    values = np.ascontiguousarray(values)  # an object array's buffer: one PyObject pointer per value
    pointers = np.frombuffer((ctypes.c_char * values.nbytes).from_address(values.ctypes.data), dtype=np.intp)
    if not (pointers == pointers[0]).all():
        return None
    data = first.encode()
    if len(data) * n >= 2**31:  # a string array's offsets are 32-bit
        return None
    offsets = np.arange(n + 1, dtype=np.int32) * np.int32(len(data))
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data * n)])


def _arrow_1d(name: str, values: np.ndarray) -> Any:
    """A 1-D numpy column as an Arrow array that owns its memory (the caller's array is not kept)."""
    import pyarrow as pa

    if values.dtype.kind in "fiub":
        return pa.array(np.array(values, copy=True))  # pyarrow would share a numeric buffer
    if values.dtype.kind == "O" and values.ndim == 1:
        constant = _constant_string(values)
        if constant is not None:
            return constant
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise ConnectorError(
            f"column {name!r} cannot be written to Parquet ({exc}); a column must hold one kind of "
            f"value (numbers, strings, lists or dicts), got e.g. {shorten(values[:3].tolist(), 200)}"
        ) from exc


def _map_of(n: int, names: Sequence[str], items: Any, mask: Any = None) -> Any:
    """A map array of ``n`` rows with the keys ``names`` each, ``items`` row-major (n * k values)."""
    import pyarrow as pa

    k = len(names)
    keys = np.empty(n * k, dtype=object)
    if k:
        keys[:] = np.tile(np.asarray(names, dtype=object), n)
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * np.int32(k))
    return pa.MapArray.from_arrays(offsets, pa.array(keys, pa.string()), items, mask=mask)


def _struct_to_map(name: str, arr: Any) -> Any:
    """A struct array (what pyarrow infers from dicts) as a map from key to value (null dicts stay null)."""
    import pyarrow as pa

    n, k = len(arr), arr.type.num_fields
    names = [arr.type.field(j).name for j in range(k)]
    children = arr.flatten()
    item = pa.null()
    for c in children:
        item = _unify(item, c.type)
        if item is None:
            raise ConnectorError(
                f"column {name!r}: the values of its dicts must be of one kind (numbers, strings, ...), got "
                f"{', '.join(str(c.type) for c in children)}")
    item = _settled(item)
    values = pa.concat_arrays([c.cast(item) for c in children]) if k else pa.array([], item)
    order = (np.arange(n)[:, None] + np.arange(k)[None, :] * n).ravel()  # row-major from column-major
    mask = arr.is_null() if arr.null_count else None
    return _map_of(n, names, values.take(pa.array(order)), mask)


def _arrow_column(name: str, col: Any) -> Any:
    """One column of :data:`connectors.base.Columns` as an Arrow array.

    A 1-D array gives its Arrow type (object arrays are inferred: str -> string, list -> list, dict ->
    map from key to value), a 2-D numeric array of shape (n, k) gives ``list<double>`` (or a list of
    its dtype) with k values per row, a :class:`DictColumn` a ``map<string, double>`` (or of its
    dtype): maps, unlike structs, take a different set of keys in a later batch (the responsibilities
    after a refit changed the number of components).
    """
    import pyarrow as pa

    if isinstance(col, DictColumn):
        values = col.values
        n, k = values.shape
        items = _arrow_1d(name, np.ascontiguousarray(values).reshape(-1)) if values.dtype.kind != "O" \
            else _arrow_1d(name, values.reshape(-1))
        return _map_of(n, col.keys, items)
    if not isinstance(col, np.ndarray):
        values = np.empty(len(col), dtype=object)
        values[:] = list(col)
        col = values
    if col.ndim == 1:
        arr = _arrow_1d(name, col)
        return _struct_to_map(name, arr) if pa.types.is_struct(arr.type) else arr
    if col.ndim == 2 and col.dtype.kind in "fiub":
        n, k = col.shape
        flat = pa.array(np.ascontiguousarray(col).reshape(-1).copy())
        if n * k < 2**31:
            return pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * np.int32(k)), flat)
        return pa.LargeListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int64) * k), flat)
    if col.ndim == 2:
        rows = np.empty(col.shape[0], dtype=object)
        rows[:] = [list(r) for r in col]
        return _arrow_1d(name, rows)
    raise ConnectorError(f"column {name!r} must be 1-D or 2-D, got shape {col.shape}")


#: Rows sampled to choose a column's encoding (see :func:`dictionary_columns`).
_SAMPLE_ROWS = 4096


def dictionary_columns(table: Any) -> list[str]:
    """The Parquet leaf columns of ``table`` worth dictionary encoding, for ``use_dictionary=``.

    A flat column is dictionary encoded when its first rows (up to 4096) hold at most one distinct
    value in four (a constant file name, a cluster id, a flag); a map's keys always are.  Other
    columns (ids, timestamps, log-likelihoods, list and map values) are written plain: pyarrow's
    default dictionary-encodes every column until its dictionary passes 1 MiB, and on columns of
    distinct values that attempt costs 3-8x the plain write (measured on the pipeline's score
    columns).  The choice depends only on the rows, so a writer that resumes chooses as the
    uninterrupted one did.

    Parameters
    ----------
    table : pyarrow.Table
        The first rows written to a file.

    Returns
    -------
    list of str
        Leaf column paths (a top-level column's name; ``"<map>.key_value.key"`` for a map's keys).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    sample = table.slice(0, _SAMPLE_ROWS)
    n = sample.num_rows
    out = []
    for field, col in zip(table.schema, sample.columns):
        t = field.type
        if pa.types.is_map(t):
            out.append(f"{field.name}.key_value.key")
        elif not pa.types.is_nested(t):
            try:
                few = n == 0 or pc.count_distinct(col, mode="all").as_py() * 4 <= n
            except pa.ArrowNotImplementedError:  # e.g. a null-typed column: pyarrow's default
                few = True
            if few:
                out.append(field.name)
    return out
