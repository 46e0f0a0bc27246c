"""The tasks the runner trains, one room each: `generation` (the GAN families) and
`completion` (GLCIC image completion). A task keeps `pipeline.training.runner.Task` and is
listed in `runner.TASKS`; it imports what every task shares from `pipeline.training` and never
another task."""
