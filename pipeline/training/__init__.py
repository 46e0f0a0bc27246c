"""Training: the per-worker GAN loop, its checkpoints, and the Ray Train driver."""
