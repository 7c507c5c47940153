"""Follow mode of the line sources: follow each path as ``tail -F`` does, through rotation and truncation.

A file renamed away (rotated) is read to its end through the handle still open, then the file now at
the path is read from offset 0; a file truncated underneath (copytruncate) is read again from offset
0 with a :class:`TruncationWarning`.  Positions record which file (inode) is being read and whether
the path has since been replaced, so a restarted source continues in each of these states;
:mod:`connectors.files` states what is promised.

:class:`_Follower` holds the detection (truncation, rotation) and the resumption of a followed file
(:meth:`~_Follower._seek_followed`); it is a mixin of :class:`connectors._line_source._LineSource`,
whose per-file state it reads and whose ``_reset_file`` / ``_open`` / ``_on_open`` it calls.  The
warnings are exported by :mod:`connectors.lines`.
"""

from __future__ import annotations

import fnmatch
import glob as _glob
import os
import warnings
from typing import Any, Mapping

from connectors._paths import HEAD_BYTES, _hash
from connectors.base import PositionError

__all__ = ["RotationWarning", "TruncationWarning"]


class TruncationWarning(UserWarning):
    """A followed file was truncated (or rewritten) underneath the source; it is read again from offset 0."""


class RotationWarning(UserWarning):
    """A position's file was rotated away and cannot be found any more; lines it received after the
    position's offset are not read."""


class _Follower:
    """Truncation and rotation handling of a followed line source (mixin of ``_LineSource``).

    Counts into the host's ``truncations`` and ``rotations`` and warns with
    :class:`TruncationWarning` / :class:`RotationWarning`.
    """

    def _watching(self) -> bool:
        """Whether the current file is watched for truncation and rotation (follow mode, not gzip)."""
        return self.follow and not self._gz and self._fh is not None

    def _was_truncated(self, got_data: bool) -> bool:
        """The open file is shorter than what was read from it, or its first bytes changed."""
        fd = self._fh.fileno()
        if not got_data and os.fstat(fd).st_size < self._read_pos:
            return True
        return bool(self._head) and os.pread(fd, len(self._head), 0) != self._head

    def _restart_truncated(self) -> None:
        """Warn, count, and read the (same, truncated) file again from offset 0."""
        fh, path, ino, rotated = self._fh, self._path, self._ino, self._rotated
        size = os.fstat(fh.fileno()).st_size
        dropped = (f"; the unterminated line of {len(self._tail)} bytes at offset {self._offset} was "
                   "never completed and is dropped") if self._tail else ""
        warnings.warn(
            f"file {path!r} was truncated or rewritten underneath the source (now {size} bytes; "
            f"{self._read_pos} bytes had been read and records consumed up to offset {self._offset}, "
            f"line {self._line}); reading it again from offset 0{dropped}",
            TruncationWarning,
            stacklevel=4,
        )
        self.truncations += 1
        self._fh = None  # keep the handle open across the reset
        self._reset_file(path)
        fh.seek(0)
        head = fh.read(HEAD_BYTES)
        fh.seek(0)
        self._fh, self._ino, self._head, self._rotated = fh, ino, head, rotated
        self._on_open(fh, 0)

    def _path_inode(self) -> int | None:
        """Inode of the regular file now at the current path (None if there is none)."""
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return st.st_ino if os.path.isfile(self._path) else None

    def _matches(self, path: str) -> bool:
        """Whether ``path`` is one of this source's paths or matches one of its patterns."""
        items = [self.paths] if isinstance(self.paths, (str, os.PathLike)) else list(self.paths)
        for p in map(os.fspath, items):
            if p == path or (_glob.has_magic(p) and fnmatch.fnmatchcase(path, p)):
                return True
        return False

    def _seek_followed(self, position: Mapping[str, Any]) -> None:
        """:meth:`seek` in follow mode: resume in the file, its truncated self or its rotated-away self."""
        path, ino = position["path"], int(position["inode"])
        offset, line, hl = int(position["offset"]), int(position["line"]), int(position["head_len"])
        self._reset_file(path)
        if self._path_inode() == ino:
            try:
                size = os.stat(path).st_size
                if size >= offset:
                    try:
                        self._open(path, offset, line)
                        if len(self._head) >= hl and _hash(self._head[:hl]) == position["head"]:
                            return
                    except PositionError:  # e.g. a CSV offset now inside the header line
                        pass
                self._open(path, 0, 0)
            except OSError as exc:
                raise PositionError(f"file {path!r} of the position cannot be read: {exc}") from exc
            warnings.warn(
                f"file {path!r} was truncated or rewritten since the position was taken (now {size} "
                f"bytes, the position's offset is {offset}, line {line}): reading it from offset 0; "
                "lines written to it after the position and before the truncation are not read",
                TruncationWarning,
                stacklevel=2,
            )
            self.truncations += 1
            return
        # the path names another file now, or none: the position's file was rotated away
        self.rotations += 1
        old = self._find_rotated(path, ino, offset, hl, position["head"])
        if old is not None:
            try:
                self._open(old, offset, line)
            except OSError as exc:
                raise PositionError(f"rotated file {old!r} of the position cannot be read: {exc}") from exc
            self._path, self._rotated = path, True  # records keep the followed path's name
            return
        folder = os.path.dirname(path) or "."
        then = (f"continuing with the file now at {path!r} from offset 0" if self._path_inode() is not None
                else f"continuing with the file that appears at {path!r} (from offset 0) or the next file")
        warnings.warn(
            f"file {path!r} of the position (inode {ino}) was rotated away and is not in {folder!r} "
            f"any more: the lines it received after offset {offset} (line {line}) are not read; {then}",
            RotationWarning,
            stacklevel=2,
        )
        self._ino, self._offset, self._line = ino, offset, line
        self._eof = self._rotated = True
        self._ghost = {k: position[k] for k in ("path", "inode", "head_len", "head", "offset", "line")}

    @staticmethod
    def _find_rotated(path: str, ino: int, offset: int, head_len: int, head: str) -> str | None:
        """The file in ``path``'s folder with inode ``ino``, at least ``offset`` bytes and first bytes
        hashing to ``head`` (a rotated-away file under its new name), or None."""
        folder = os.path.dirname(path) or "."
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return None
        for entry in entries:
            try:
                if entry.inode() != ino or not entry.is_file(follow_symlinks=False):
                    continue
                with open(entry.path, "rb") as fh:
                    first = fh.read(head_len)
                    size = os.fstat(fh.fileno()).st_size
            except OSError:
                continue
            if size >= offset and len(first) == head_len and _hash(first) == head:
                return entry.path
        return None
