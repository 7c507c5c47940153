"""File sources (CSV, JSON Lines, Parquet) and file sinks (JSON Lines, CSV).

Sources
-------
A source reads one file or a glob of files, always in sorted path order.  A position is a dict::

    {"path": ..., "inode": ..., "head_len": ..., "head": ..., "offset": ..., "line": ..., "records": ...}

``offset`` is the byte offset of the next line (decompressed offset for ``.gz`` files), ``line`` the
number of lines of that file already consumed, ``records`` the number of records (good plus rejected)
consumed since the start of the stream.  ``inode`` and a hash of the first ``head_len`` bytes (at most
4 KiB, never beyond ``offset``) identify the file: appending to a file keeps both, while replacing it
(new inode) or rewriting it (different head) makes :meth:`seek` raise :class:`PositionError`, as does a
file that vanished or got shorter than ``offset``.

Lines and records
-----------------
One record per line.  Empty and whitespace-only lines are skipped (they count in line numbers).
A line is consumed only once its newline has been written, **except** at the true end of a finished
file: without ``follow=True`` (or for a file followed by a later file of the glob, i.e. rotated) a
last line without trailing newline is a complete record; if it was cut mid-JSON it is rejected like
any malformed record.  With ``follow=True`` the last file is watched for growth: an unterminated last
line waits until its newline arrives, and :meth:`read` answers ``"idle"`` (never ``"end"``) when
nothing new came within the timeout; new files that sort after the current one are picked up.
Gzip files (``.gz``) are read as complete files (they are not followed); seeking in them re-reads
from the start.

Meta of every record (good or rejected): ``{"source": name, "file": path, "line": n, "offset": b}``
with ``n`` the 1-based line number and ``b`` the byte offset of the line.

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
from connectors.parquet import ParquetSource
from connectors.sinks import CSVSink, JSONLinesSink, to_json_line

__all__ = [
    "CSVSource",
    "JSONLinesSource",
    "ParquetSource",
    "JSONLinesSink",
    "CSVSink",
    "to_json_line",
]
