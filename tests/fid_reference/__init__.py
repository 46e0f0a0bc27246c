"""The FID Inception-v3 reference: deterministic weights (weights.py) and the script that ran
the original torchvision / pytorch-fid code on them (make_reference.py)."""
