"""Where `edge run` writes: readable lines on a terminal, JSON lines into a pipe, files by extension.

Every output is wrapped in a :class:`CountedOutput` so the run can end with a summary naming each
one (where, which format, how many records, how many of them errors). Standard output survives its
reader going away (``edge run ... | head -1``): the run is told to stop, nothing is printed about
it, and the process exits 0 as ``grep``/``head`` pipelines expect.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from edge_runtime import Record, Sink, open_sink

__all__ = ["CountedOutput", "StdoutSink", "format_record", "open_outputs", "summary_lines"]

#: detections shown on a terminal line; the rest are counted
_BEST_SHOWN = 3
#: source column width on a terminal line (longer names push the rest right)
_SOURCE_WIDTH = 16
#: values shown on a terminal line
_VALUES_SHOWN = 4
_SHOWN_AS_FILE = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})


def _score(x: float) -> str:
    return f"{x:.2f}"


def _source(rec: Record, root: Path | None) -> str:
    src = rec["source"]
    p = Path(src)
    if p.suffix.lower() in _SHOWN_AS_FILE:
        # Relative to the directory being run on: the part of the name that differs.
        if root is not None and p.is_relative_to(root):
            return str(p.relative_to(root))
        return src
    # A camera, a stream or a table: the same source for every frame, so the frame tells them apart.
    return f"{src} #{rec['frame']}"


def format_record(rec: Record, root: Path | None = None) -> str:
    """One line for a person: source (relative to ``root``, the directory run on), result, total
    milliseconds."""
    head = f"{_source(rec, root):<{_SOURCE_WIDTH}}"
    if "error" in rec:
        return f"{head}  " + click.style(f"error: {rec['error']}", fg="red")
    parts: list[str] = []
    detections = rec.get("detections")
    top_k = rec.get("top_k")
    values = rec.get("values")
    if detections is not None:
        n = len(detections)
        if n == 0:
            parts.append("no objects")
        else:
            best = ", ".join(f"{d['label']} {_score(d['score'])}" for d in detections[:_BEST_SHOWN])
            more = f", +{n - _BEST_SHOWN} more" if n > _BEST_SHOWN else ""
            parts.append(f"{n} object{'s' if n != 1 else ''}: {best}{more}")
    elif top_k:
        parts.append(click.style(top_k[0]["label"], bold=True) + f" {_score(top_k[0]['score'])}")
    elif top_k is not None:
        parts.append("no label above the threshold")
    if values is not None:
        shown = ", ".join(f"{v:.4g}" for v in values[:_VALUES_SHOWN])
        parts.append(f"values {shown}" + (" …" if len(values) > _VALUES_SHOWN else ""))
    total = rec.get("latency_ms", {}).get("total")
    if total is not None:
        parts.append(f"{total:.1f} ms")
    if rec.get("path") == "cloud":
        parts.append("[cloud]")
    return f"{head}  " + "  ".join(parts)


class StdoutSink:
    """Records to standard output: terminal lines or JSON lines. A closed pipe calls ``on_closed``
    once and silently drops the rest."""

    def __init__(self, *, human: bool, on_closed: Callable[[], None] | None = None, root: Path | None = None,
                 ) -> None:
        self.human = human
        self.root = root
        self.kind = "text" if human else "JSON lines"
        self.closed_by_reader = False
        self._on_closed = on_closed

    def write(self, record: Record) -> None:
        if self.closed_by_reader:
            return
        line = format_record(record, self.root) if self.human else json.dumps(record, separators=(",", ":"))
        try:
            # click.echo drops the colours when stdout is not a terminal
            click.echo(line, color=None if self.human else False)
            sys.stdout.flush()
        except BrokenPipeError:
            self._reader_gone()
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise
            self._reader_gone()

    def _reader_gone(self) -> None:
        self.closed_by_reader = True
        # Python flushes stdout again at exit and would report the broken pipe there; point the
        # descriptor at /dev/null so that last flush has nowhere to fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
        if self._on_closed is not None:
            self._on_closed()

    def close(self) -> None:
        if self.closed_by_reader:
            return
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            self._reader_gone()


class CountedOutput:
    """A sink plus what the summary says about it."""

    def __init__(self, sink: Sink, where: str, kind: str) -> None:
        self.sink = sink
        self.where = where
        self.kind = kind
        self.records = 0
        self.errors = 0

    def write(self, record: Record) -> None:
        self.sink.write(record)
        self.records += 1
        if "error" in record:
            self.errors += 1

    def close(self) -> None:
        self.sink.close()


def _sink_where(spec: str, sink: Any) -> str:
    path = getattr(sink, "path", None)
    return str(path) if path is not None else spec


def open_outputs(specs: Sequence[str], *, human: bool, on_pipe_closed: Callable[[], None] | None = None,
                 root: Path | None = None) -> list[CountedOutput]:
    """One counted output per ``--output``; ``-`` is standard output (terminal lines when
    ``human``, with file names relative to ``root``, else JSON lines). Files are opened here, so a
    bad name fails before any inference."""
    outs: list[CountedOutput] = []
    try:
        for spec in specs:
            if spec in ("-", ""):
                stdout = StdoutSink(human=human, on_closed=on_pipe_closed, root=root)
                outs.append(CountedOutput(stdout, "stdout", stdout.kind))
            else:
                sink = open_sink(spec)
                outs.append(CountedOutput(sink, _sink_where(spec, sink), str(getattr(sink, "kind", "records"))))
    except BaseException:
        for o in outs:
            o.close()
        raise
    return outs


def summary_lines(outputs: Sequence[CountedOutput]) -> list[str]:
    """``wrote results.csv (CSV): 4 records, 1 error`` for every output but standard output."""
    lines = []
    for o in outputs:
        if isinstance(o.sink, StdoutSink):
            continue  # its reader has the records already; the summary is about what is left behind
        verb = "queued" if o.kind == "MQTT" else "wrote"
        lines.append(f"{verb} {o.where} ({o.kind}): {o.records} record{'s' if o.records != 1 else ''}, "
                     f"{o.errors} error{'s' if o.errors != 1 else ''}")
    return lines
