"""An independent class judge: a classifier trained on a dataset's real labels, cached beside
the dataset, that tells whether a conditional generator's images show the intended class
(an ACGAN's own auxiliary classifier grades the G that learns to fool it).

    info = train_judge("data/anime-64")          # or `pipeline judge train anime-64`
    judge = find_judge("data/anime-64", plan.to_dict())   # None until trained
    judge.accuracy(images, y)     # {"class_acc": ..., "class_acc/hair": ...}
"""

from pipeline.judge.judge import Judge, find_judge, how_to_train
from pipeline.judge.record import JudgeInfo
from pipeline.judge.train import train_judge

__all__ = ["Judge", "JudgeInfo", "find_judge", "how_to_train", "train_judge"]
