"""The completion task (GLCIC, Iizuka et al. 2017) and its tools: the task (`task.py`), the
holes and what C is given and gives back (`masks.py`), its diagnostics (`diagnostics.py`);
completing images with a trained C (`complete.py`, `pipeline complete`) and scoring it
(`evaluate.py`, `pipeline evaluate`)."""
