"""File sources (CSV, JSON Lines, Parquet) and file sinks (JSON Lines, CSV).

Sources
-------
A source reads one file or a glob of files, always in sorted path order.  A position is a dict::

    {"path": ..., "inode": ..., "head_len": ..., "head": ..., "offset": ..., "line": ..., "records": ...,
     "rotated": ...}

``offset`` is the byte offset of the next line (decompressed offset for ``.gz`` files), ``line`` the
number of lines of that file already consumed, ``records`` the number of records (good plus rejected)
consumed since the start of the stream.  ``inode`` and a hash of the first ``head_len`` bytes (at most
4 KiB, never beyond ``offset``) identify the file being read: appending to a file keeps both.
``rotated`` (line sources; optional in saved positions) says that ``path`` names another file now, or
none: the file being read was renamed away.  Without ``follow=True``, a file replaced (new inode),
rewritten (different head), vanished or shorter than ``offset`` makes :meth:`seek` raise
:class:`PositionError`.

Follow mode: rotation and truncation
------------------------------------
With ``follow=True`` the line sources follow each path as ``tail -F`` does (``.gz`` files excepted):

* **Rotation** (the path is renamed away, then a new file is created at it): the old file is read to
  its end through the handle still open (its unterminated last line is then a complete record), then
  the file at the path is read from offset 0.  Every line is read once, in order, provided the writer
  has stopped writing to the old file by the time the source reaches its end, and the path is not
  rotated twice before then (the file in between would not be read).
* **Truncation** (copytruncate): a file found shorter than what was read, or whose first bytes (up to
  4 KiB) changed, is read again from offset 0, with a :class:`connectors.lines.TruncationWarning`
  (counted in ``source.truncations``).  Lines written after the last read and before the truncation
  are in the copy, not read; an unterminated line cut by the truncation is dropped (the warning says
  so).  A file truncated and written again past the old offset with the very same first bytes cannot
  be told from an append.
* **Restart** (:meth:`seek`): a file truncated or rewritten since the position was taken is read from
  offset 0 with a ``TruncationWarning`` (lines written after the position and before the truncation
  are not read).  A file rotated away is looked for in the path's folder (same inode and first bytes,
  any name): if found, it is read from ``offset`` to its end and nothing is lost; if not (deleted,
  compressed, moved elsewhere), a :class:`connectors.lines.RotationWarning` says that the lines it
  received after ``offset`` are not read, and the source continues with the file at the path (or the
  one that appears there) from offset 0.

Lines and records
-----------------
One record per line.  Empty and whitespace-only lines are skipped (they count in line numbers).
A line is consumed only once its newline has been written, **except** at the true end of a finished
file: without ``follow=True`` (or for a file followed by a later file of the glob, i.e. rotated) a
last line without trailing newline is a complete record; if it was cut mid-JSON it is rejected like
any malformed record.  With ``follow=True`` the last file is watched for growth: an unterminated last
line waits until its newline arrives, and :meth:`read` answers ``"idle"`` (never ``"end"``) when
nothing new came within the timeout; new files that sort after the current one are picked up (a glob
must not match the names rotated files get, or they would be read again).  :meth:`read` waits only
while it has no record: a partial batch comes back as soon as the file has nothing more.
Gzip files (``.gz``) are read as complete files (they are not followed); seeking in them re-reads
from the start.

Meta of every record (good or rejected): ``{"source": name, "file": path, "line": n, "offset": b}``
with ``n`` the 1-based line number and ``b`` the byte offset of the line (``file`` is the followed path,
also for lines of a rotated-away file).  Batches carry them as columns (``line`` and ``offset`` int64),
followed by any fields given in ``carry``; rejects carry them as a dict each.

Sinks
-----
:class:`JSONLinesSink` and :class:`CSVSink` append to a file; ``flush()`` flushes and fsyncs;
``position()`` is ``{"path": ..., "size": durable_size}``; ``restore(position)`` truncates the file
back to that size, so a pipeline resumed from a checkpoint leaves no duplicates.  Non-finite floats
are written as JSON ``null`` (CSV: an empty cell), so the output is always valid JSON.

The implementations live in :mod:`connectors.lines` (JSON Lines and CSV sources),
:mod:`connectors.parquet` (Parquet) and :mod:`connectors.sinks` (file sinks); this module gathers them.
"""

from __future__ import annotations

from connectors.lines import CSVSource, JSONLinesSource
from connectors.parquet import ParquetSink, ParquetSource
from connectors.sinks import CSVSink, JSONLinesSink, to_json_line

__all__ = [
    "CSVSource",
    "JSONLinesSource",
    "ParquetSource",
    "ParquetSink",
    "JSONLinesSink",
    "CSVSink",
    "to_json_line",
]
