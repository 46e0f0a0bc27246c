"""Hyper-parameter sweeps: Ray Tune over the search spaces in `tune_spaces/`.

    space.py      the space file format: distributions, fixed values, metric, defaults (no Ray)
    plan.py       the command's options and the space checked into a frozen SweepPlan (no Ray)
    tuner.py      the Ray Tune objects: search-space domains, scheduler, searcher, the Tuner
    trial.py      one trial: the same TorchTrainer `pipeline train` builds, inside a Tune function
    callbacks.py  the driver's progress lines and each trial's final MLflow status
    summary.py    the trials' rows, table (CSV) and plots, the best trial, the parent run
    pareto.py     two objectives: each trial's point, the Pareto front, pareto.csv and its plot
    sweep.py      `tune()`: plan, size to the cluster, run the Tuner, sum it up

Each trial logs to its own nested MLflow child run under one parent run per sweep. Imports go
one way: sweep -> summary -> pareto, tuner -> trial, callbacks -> plan -> space.
"""
