"""Datasets as Arrow shards: the format, the sources that feed it, the ingest engine, the reader."""
