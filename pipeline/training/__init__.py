"""Training: what every task shares. The per-worker runner and its `TASKS` registry, the Ray
Train driver and worker, a solo run, contexts, checkpoints, the live line, the report's
statistics, images, noise, labels, optimizers, findings, and `pipeline evaluate`'s dispatch
to a task. The tasks themselves live in `pipeline.tasks`."""
