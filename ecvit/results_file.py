"""``ecvit predict --results-file``: top-k predictions written row by row (CSV, JSON, Parquet).

One row per image, with the columns timm's ``inference.py`` writes with
``--results-separate-col --include-index``: ``filename``, then ``index_0 .. index_{k-1}``
(class indices), ``label_0 ..`` (class names), ``prob_0 ..`` (softmax probabilities, best
first). Rows are written as batches finish, so memory does not grow with the number of
images: CSV line by line, JSON as one valid array whose items are appended, Parquet in row
groups of :data:`ROW_GROUP` rows.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, BinaryIO, Iterable

from ecvit.errors import UsageError, printable

FORMATS = {".csv": "csv", ".json": "json", ".parquet": "parquet"}
ROW_GROUP = 4096  # Parquet rows per row group: a few hundred KB, written as they fill


def results_format(path: str | Path) -> str:
    """``csv``/``json``/``parquet`` from the file name; checked before any image is read."""
    suffix = Path(path).suffix.lower()
    fmt = FORMATS.get(suffix)
    if fmt is None:
        raise UsageError(f"--results-file {path}: the name must end with "
                         f"{', '.join(FORMATS)} (the format is chosen by it)")
    if Path(path).is_dir():
        raise UsageError(f"--results-file {path} is a directory; name the file to write")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise UsageError(f"--results-file {path}: writing Parquet needs pyarrow "
                             "(pip install pyarrow); or write .csv or .json") from None
    return fmt


def column_names(k: int) -> list[str]:
    return (["filename"] + [f"index_{i}" for i in range(k)] + [f"label_{i}" for i in range(k)]
            + [f"prob_{i}" for i in range(k)])


def result_row(item: dict[str, Any]) -> list[Any]:
    """One prediction (``{"image", "top": [{"class", "index", "prob"}]}``) as a row."""
    top = item["top"]
    return ([item["image"]] + [t["index"] for t in top] + [t["class"] for t in top]
            + [round(float(t["prob"]), 6) for t in top])


class ResultsWriter:
    """Appends rows to an open binary file in one format; :meth:`close` finishes the file
    (the JSON array's bracket, the Parquet footer) and leaves ``fh`` open."""

    def __init__(self, fh: BinaryIO, fmt: str, k: int) -> None:
        self.fh, self.fmt, self.names = fh, fmt, column_names(k)
        self.count = 0
        if fmt == "csv":
            self.text = io.TextIOWrapper(fh, encoding="utf-8", errors="surrogateescape", newline="")
            self.csv = csv.writer(self.text)
            self.csv.writerow(self.names)
        elif fmt == "json":
            fh.write(b"[")
        else:
            self.pending: list[list[Any]] = []
            self.parquet = _parquet_writer(fh, k)

    def write(self, rows: Iterable[list[Any]]) -> None:
        rows = list(rows)
        self.count += len(rows)
        if self.fmt == "csv":
            self.csv.writerows(rows)
        elif self.fmt == "json":
            for i, row in enumerate(rows):
                sep = b"\n" if self.count - len(rows) + i == 0 else b",\n"
                self.fh.write(sep + json.dumps(dict(zip(self.names, row))).encode("ascii"))
        else:
            self.pending.extend(rows)
            if len(self.pending) >= ROW_GROUP:
                self._flush_row_group()

    def close(self) -> None:
        if self.fmt == "csv":
            self.text.flush()
            self.text.detach()
        elif self.fmt == "json":
            self.fh.write(b"\n]\n" if self.count else b"]\n")
        else:
            self._flush_row_group()
            self.parquet.close()

    def _flush_row_group(self) -> None:
        import pyarrow as pa

        if not self.pending:
            return
        schema = self.parquet.schema
        arrays = []
        for column, field in zip(zip(*self.pending), schema):
            if field.type == pa.string():  # Arrow strings are valid UTF-8: undecodable names shown
                column = [printable(text) for text in column]
            arrays.append(pa.array(column, type=field.type))
        self.parquet.write_table(pa.Table.from_arrays(arrays, schema=schema))
        self.pending = []


def _parquet_writer(fh: BinaryIO, k: int) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    fields = ([pa.field("filename", pa.string())] + [pa.field(f"index_{i}", pa.int64()) for i in range(k)]
              + [pa.field(f"label_{i}", pa.string()) for i in range(k)]
              + [pa.field(f"prob_{i}", pa.float32()) for i in range(k)])
    return pq.ParquetWriter(fh, pa.schema(fields))


__all__ = ["ResultsWriter", "results_format", "result_row", "column_names", "FORMATS"]
