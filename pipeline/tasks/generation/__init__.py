"""The generation task (DCGAN, ACGAN, WGAN, WGAN-GP) and its tools: the task (`task.py`), its
objective and loss terms (`objective.py`), its diagnostics (`diagnostics.py`); drawing from a
trained G (`sample.py`, `pipeline sample`), latent arithmetic (`arithmetic.py`, `pipeline
sample --arithmetic`) and FID and the other metrics of a trained G (`evaluate.py`, `pipeline
evaluate`)."""
