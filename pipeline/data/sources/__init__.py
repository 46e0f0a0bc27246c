"""Sources: each turns one released dataset format into records for the ingest engine.

A source answers two questions. In the main process, `plan()`: which records exist in which
split, in a fixed order, with which extra columns and labels, and a fingerprint of the input.
In each worker process, `read(split, index)`: the encoded bytes (or pixels) of one record and
its column values. The engine does the rest (parallelism, shards, manifest), identically for
every source.
"""

from pipeline.data.sources.base import Plan, Record, Source

__all__ = ["Plan", "Record", "Source"]
