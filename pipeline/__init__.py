"""pipeline: a distributed experiment pipeline for GANs.

The library behind the `pipeline` command: data (Arrow shards and their sources), models,
training, tuning and metrics. Importing it is cheap: torch, ray and mlflow are imported
inside the functions that need them.
"""

__version__ = "0.1.0"
