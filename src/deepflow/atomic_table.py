"""An output table written atomically: appended chunk by chunk to a hidden temporary file beside
the target, renamed onto it only when everything went through (batch scoring's outputs and rejects)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


class AtomicTableWriter:
    """Appends frames to ``<dir>/.<name>.tmp-<pid>`` (parquet via ParquetWriter, CSV by appending);
    ``commit()`` renames it onto ``path``, ``abort()`` deletes it. The first frame fixes the schema."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.path, self.format = path, fmt  # "parquet" or "csv"
        self.tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        self.schema: pa.Schema | None = None
        self.template: pd.DataFrame | None = None
        self._pq: pq.ParquetWriter | None = None
        self._started = False

    def write(self, frame: pd.DataFrame) -> None:
        if self.template is None:
            self.template = frame.iloc[:0]
        if frame.empty:
            return
        if self.format == "parquet":
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self._pq is None:
                self.schema = table.schema
                self._pq = pq.ParquetWriter(self.tmp, self.schema)
            elif not table.schema.equals(self.schema):
                table = table.cast(self.schema)
            self._pq.write_table(table)
        else:
            frame.to_csv(self.tmp, mode="a" if self._started else "w", header=not self._started, index=False)
        self._started = True

    def commit(self) -> None:
        if not self._started:  # nothing written: an empty file with the columns
            empty = self.template if self.template is not None else pd.DataFrame()
            if self.format == "parquet":
                pq.write_table(pa.Table.from_pandas(empty, preserve_index=False), self.tmp)
            else:
                empty.to_csv(self.tmp, index=False)
        if self._pq is not None:
            self._pq.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self._pq is not None:
            try:
                self._pq.close()
            except Exception:  # already broken: we are deleting it anyway
                pass
        self.tmp.unlink(missing_ok=True)
