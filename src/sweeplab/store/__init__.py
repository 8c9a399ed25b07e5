"""The run store: runs, metric time series and summaries (SQLite by default, PostgreSQL by URL)."""
from sweeplab.store.db import Metric, RunRow, Store, default_store_url, open_store

__all__ = ["Metric", "RunRow", "Store", "default_store_url", "open_store"]
