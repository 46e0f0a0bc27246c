"""Hyper-parameter sweeps: Ray Tune over the search spaces in `tune_spaces/`.

    space.py   the space file format: distributions, fixed values, metric, defaults (no Ray)
    sweep.py   `tune()`: plan the sweep, size it to the cluster, run the Tuner, sum it up
    trial.py   one trial: the same TorchTrainer `pipeline train` builds, inside a Tune function
    report.py  the sweep's table (CSV) and plots (PNG) for the MLflow parent run

Each trial logs to its own nested MLflow child run under one parent run per sweep.
"""
