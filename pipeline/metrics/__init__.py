"""FID and KID: the Inception network of FID, its weights, feature statistics, the cached
reference statistics of a dataset, and evaluating a generator (in training or on its own)."""
