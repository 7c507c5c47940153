"""Typed decoding of many JSON lines at once (msgspec), with a proof that every line stood alone.

:class:`BlockDecoder` decodes a block of lines into a float matrix (and carried columns) with one call
to msgspec's ``decode_lines`` on the joined block.  It is the fast path of
:class:`connectors.decoders.JSONDecoder`, and it may only accept what the careful per-line path would
accept, with the same values: it returns which lines it decoded and leaves every other line to that
path.

Why a joined block is safe
--------------------------
``decode_lines`` reads a sequence of JSON values separated by whitespace; it does not require one value
per line.  A bad line could therefore swallow the next one (``{"a": 1, "z": [`` followed by ``1]}``) or
hold two values (``{"a": 1} {"a": 2}``), and the values would no longer line up with the lines.  A line
takes the block path only if it starts with ``{`` and ends with ``}`` (a ``\\r`` after it is allowed).
Between two such lines the block holds ``}\\n{``, and no JSON value can contain that sequence outside a
string (an object or array needs a ``,`` or ``:`` between its items) while a string cannot hold a raw
newline.  So no value spans two such lines, every line holds at least one value, and when the block
decodes to exactly as many values as it has lines, value ``i`` is line ``i``.  Anything else (a decode
error, a count that differs, invalid UTF-8 anywhere in the block) sends lines back to the careful path:
a failed decode is split at the line where msgspec stopped (the lines before it are decoded again, the
line itself goes to the careful path, the decoder goes on after it), so each line is decoded at most
about twice and per-line work happens only for bad lines.
"""

from __future__ import annotations

import re
from itertools import chain
from operator import attrgetter, itemgetter
from typing import Any, Sequence

import msgspec
import numpy as np

__all__ = ["BlockDecoder"]

_AT_INDEX = re.compile(r"at `\$\[(\d+)\]")
_AT_BYTE = re.compile(r"\(byte (\d+)\)")
_OPEN, _CLOSE, _CR = ord("{"), ord("}"), ord("\r")


def _struct_tree(paths: Sequence[tuple[str, ...]], leaf_types: Sequence[Any], name: str) -> tuple[type, list[str]]:
    """A msgspec Struct type reading ``paths`` (nested objects become nested Structs).

    Returns the type and, per path, the dotted attribute name that reaches its leaf.
    """
    counter = [0]

    def build(entries: list[tuple[tuple[str, ...], Any, int]], depth: int) -> tuple[type, dict[int, str]]:
        fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        rename: dict[str, str] = {}
        attr_of: dict[int, str] = {}
        groups: dict[str, list[tuple[tuple[str, ...], Any, int]]] = {}
        for path, typ, idx in entries:
            groups.setdefault(path[depth], []).append((path, typ, idx))
        for j, (key, members) in enumerate(groups.items()):
            attr = f"f{j}"
            rename[attr] = key
            leaves = [m for m in members if len(m[0]) == depth + 1]
            inner = [m for m in members if len(m[0]) > depth + 1]
            if leaves and inner:
                raise ValueError(f"field {'.'.join(leaves[0][0])!r} is both a value and an object")
            if leaves:
                typ = leaves[0][1]
                fields.append((attr, typ, None) if _optional(typ) else (attr, typ))
                for _, _, idx in leaves:
                    attr_of[idx] = attr
            else:
                sub, sub_attrs = build(inner, depth + 1)
                fields.append((attr, sub))
                for idx, a in sub_attrs.items():
                    attr_of[idx] = f"{attr}.{a}"
        counter[0] += 1
        # required fields first: msgspec wants defaulted fields last
        fields.sort(key=lambda f: len(f) == 3)
        typ = msgspec.defstruct(f"{name}{counter[0]}", fields, rename=rename, gc=False)
        return typ, attr_of

    entries = [(p, t, i) for i, (p, t) in enumerate(zip(paths, leaf_types))]
    typ, attr_of = build(entries, 0)
    return typ, [attr_of[i] for i in range(len(paths))]


def _optional(typ: Any) -> bool:
    return typ is Any or typ == (float | None)


class BlockDecoder:
    """Decode blocks of JSON lines into a float matrix and carried columns.

    Parameters
    ----------
    paths : sequence of tuple of str
        One key path per feature.
    missing_nan : bool
        Whether a missing or null feature becomes NaN (else the line is left to the careful path).
    carry : sequence of tuple of str
        Key paths of values carried along as they are (absent: ``None``).
    """

    def __init__(self, paths: Sequence[tuple[str, ...]], *, missing_nan: bool,
                 carry: Sequence[tuple[str, ...]] = ()) -> None:
        self.d = len(paths)
        self.missing_nan = missing_nan
        leaf = (float | None) if missing_nan else float
        all_paths = list(paths) + list(carry)
        types = [leaf] * len(paths) + [Any] * len(carry)
        typ, attrs = _struct_tree(all_paths, types, "Record")
        self._lines = msgspec.json.Decoder(typ).decode_lines
        self._features = attrgetter(*attrs[: self.d])
        # Common layouts (all features in one object, in order, before any other field of it): the
        # values come out of msgspec's astuple of that object (cut to the features when the object
        # holds more, e.g. a carried id), about 1.5-2x as fast as picking the attributes.
        parent = {a.rpartition(".")[0] for a in attrs[: self.d]}
        self._tuple_of: Any = None
        if len(parent) == 1:
            (p,) = parent
            holder = typ
            for part in p.split(".") if p else ():
                holder = holder.__annotations__[part] if hasattr(holder, "__annotations__") else None
                if holder is None:
                    break
            names = [f"{p}.{f}" if p else f for f in getattr(holder, "__struct_fields__", ())]
            if holder is not None and names[: self.d] == list(attrs[: self.d]):
                astuple, get = msgspec.structs.astuple, attrgetter(p)
                cut = None if len(names) == self.d else itemgetter(slice(0, self.d))

                def tuples(recs: list[Any]) -> Any:
                    # maps in C, no Python function per record
                    rows = map(astuple, map(get, recs) if p else recs)
                    return rows if cut is None else map(cut, rows)

                self._tuple_of = tuples
        self._carry = [attrgetter(a) for a in attrs[self.d:]]   # one getter per field: no tuples
        self.n_carry = len(carry)

    def decode(self, raws: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, list[list[Any]], np.ndarray]:
        """Decode what can be decoded on the block path.

        Parameters
        ----------
        raws : sequence of bytes, length n

        Returns
        -------
        X : ndarray of shape (n_done, n_features)
        done : ndarray of int, shape (n_done,)
            Increasing indices of the lines decoded here (rows of ``X``).
        carried : list of list
            One list per carried path, the values of the lines in ``done``.
        left : ndarray of int
            Increasing indices of the lines left to the careful path.
        """
        n = len(raws)
        block = b"\n".join(raws)
        lens = np.fromiter(map(len, raws), dtype=np.int64, count=n)
        starts = np.zeros(n, dtype=np.int64)
        np.cumsum(lens[:-1] + 1, out=starts[1:])
        utf8 = block.isascii()        # the common case, about 10x cheaper than decoding to check
        if not utf8:
            try:
                block.decode("utf-8")
                utf8 = True
            except UnicodeDecodeError:
                pass
        if not utf8 or n == 0 or not block:
            return self._empty(), np.empty(0, np.int64), [[] for _ in range(self.n_carry)], np.arange(n)
        buf = np.frombuffer(block, dtype=np.uint8)
        last = starts + lens - 1
        ok = lens >= 2
        top = len(buf) - 1
        first_b = buf[np.minimum(starts, top)]
        last_b = buf[np.clip(last, 0, top)]
        prev_b = buf[np.clip(last - 1, 0, top)]
        ok &= (first_b == _OPEN) & ((last_b == _CLOSE) | ((last_b == _CR) & (prev_b == _CLOSE) & (lens >= 3)))
        view = memoryview(block)
        ends = starts + lens
        done_parts: list[tuple[int, list[Any]]] = []
        left: list[int] = list(np.flatnonzero(~ok).tolist()) if not ok.all() else []
        # maximal runs of lines eligible for the block path
        if ok.all():
            runs = [(0, n)]
        else:
            edges = np.flatnonzero(np.diff(np.concatenate(([0], ok.view(np.int8), [0]))))
            runs = list(zip(edges[0::2].tolist(), edges[1::2].tolist()))
        stack = runs[::-1]
        while stack:
            a, b = stack.pop()
            if a >= b:
                continue
            try:
                recs = self._lines(view[starts[a]: ends[b - 1]])
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                bad = self._culprit(str(exc), a, b, starts)
                if bad is None:       # cannot tell where: every line of the run on its own
                    left.extend(range(a, b))
                    continue
                stack.append((bad + 1, b))
                left.append(bad)
                stack.append((a, bad))
                continue
            if len(recs) != b - a:    # some line held more than one value
                left.extend(range(a, b))
                continue
            done_parts.append((a, recs))
        return self._assemble(done_parts, n, np.asarray(sorted(left), dtype=np.int64))

    def _culprit(self, msg: str, a: int, b: int, starts: np.ndarray) -> int | None:
        """The line of run [a, b) where msgspec stopped, from its error message (None if unknown)."""
        m = _AT_INDEX.search(msg)
        if m:
            i = a + int(m.group(1))
            return i if i < b else b - 1
        m = _AT_BYTE.search(msg)
        if m:
            pos = int(starts[a]) + int(m.group(1))
            i = int(np.searchsorted(starts, pos, side="right")) - 1
            return min(max(i, a), b - 1)
        if "truncated" in msg:
            return b - 1
        return None

    def _empty(self) -> np.ndarray:
        return np.empty((0, self.d), dtype=np.float64)

    def _assemble(self, parts: list[tuple[int, list[Any]]], n: int, left: np.ndarray):
        if not parts:
            return self._empty(), np.empty(0, np.int64), [[] for _ in range(self.n_carry)], left
        parts.sort(key=lambda p: p[0])
        recs = parts[0][1] if len(parts) == 1 else list(chain.from_iterable(p[1] for p in parts))
        done = np.concatenate([np.arange(a, a + len(r), dtype=np.int64) for a, r in parts])
        m = len(recs)
        if self._tuple_of is not None and not self.missing_nan:
            X = np.fromiter(chain.from_iterable(self._tuple_of(recs)), dtype=np.float64,
                            count=m * self.d).reshape(m, self.d)
            return X, done, self._carried(recs), left
        vals = map(self._features, recs)
        if self.d == 1:
            X = np.array(list(vals), dtype=np.float64).reshape(m, 1)
        elif self.missing_nan:
            X = np.array(list(vals), dtype=np.float64).reshape(m, self.d)
        else:
            X = np.fromiter(chain.from_iterable(vals), dtype=np.float64, count=m * self.d).reshape(m, self.d)
        return X, done, self._carried(recs), left

    def _carried(self, recs: list[Any]) -> list[list[Any]]:
        return [list(map(get, recs)) for get in self._carry]
