"""Training zoo networks: ``train(TrainConfig(...), run_dir)``; see :mod:`.loop`."""

from deconv.training.loop import TrainConfig, train
from deconv.training.run_dir import RunDirectory

__all__ = ["RunDirectory", "TrainConfig", "train"]
