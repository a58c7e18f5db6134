"""Training: synthetic tasks, the stdlib corpus and its tokenizer, the trainer, and the recipes
that rebuild the shipped models (`python -m circwidgets.train RECIPE`)."""

from .corpus import CorpusTask, collect_stdlib, prepare_data_dir, stdlib_files, train_tokenizer
from .recipes import RECIPES, build, run
from .tasks import BigramTask, RepeatTask, SkipTrigramTask, Task, step_generator
from .trainer import TrainConfig, Trainer, TrainerCallback, lm_loss, register_default_callbacks

__all__ = [
    "RECIPES", "BigramTask", "CorpusTask", "RepeatTask", "SkipTrigramTask", "Task", "TrainConfig", "Trainer",
    "TrainerCallback", "build", "collect_stdlib", "lm_loss", "prepare_data_dir",
    "register_default_callbacks", "run", "stdlib_files", "step_generator", "train_tokenizer",
]
