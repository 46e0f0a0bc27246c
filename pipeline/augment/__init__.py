"""Differentiable augmentation of every image D sees, for GANs on small datasets: D judges
augmented reals and augmented fakes, in its own step and in G's, so it cannot memorise the few
training images, and G learns through the augmentation, which therefore does not leak into
its samples (as long as p stays below about 0.8 for the transforms that are not invertible in
distribution: Karras et al. 2020, fig. 3).

    config.py       the settings (`augment.*`, `ada.*`) and their checks, without torch
    policy.py       the registry `augment.policy` names from, and a run's `Augment`
    diffaugment.py  DiffAugment's color, translation, cutout (Zhao et al. 2020)
    ada.py          ADA's bgc pipeline and its controller of p (Karras et al. 2020)
"""
