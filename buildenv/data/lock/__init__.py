"""Pins: content digests of files and partitioned datasets (`digests`, `manifest`, row counts
from `parquet_footer` / `csv_rows`), the lock file's format (`lockfile`), writing locks
(`locking`) and telling whether a lock is still true (`staleness`). Reads no row value."""
