"""Small Lightning callbacks of the zoo (SWA, EMA and EarlyStopping are Lightning's own).

Stackable presets: zoo fit --config configs/cifar_cnn.yaml --config configs/callbacks/mixup.yaml (see that folder).
"""

from zoo.callbacks.averaging_check import AveragingCheck
from zoo.callbacks.confusion_matrix import ConfusionMatrix
from zoo.callbacks.distillation import Distillation
from zoo.callbacks.finite_loss import FiniteLoss
from zoo.callbacks.image_grid import ImageGrid
from zoo.callbacks.image_writer import ImageWriter
from zoo.callbacks.last_checkpoint import LastCheckpoint
from zoo.callbacks.mixup import MixUpCutMix
from zoo.callbacks.predictions import PrintTopK
from zoo.callbacks.print_predictions import PrintPredictions
from zoo.callbacks.text_samples import TextSamples
from zoo.callbacks.wandb_tools import WandbRun

__all__ = ["AveragingCheck", "ConfusionMatrix", "Distillation", "FiniteLoss", "ImageGrid", "ImageWriter",
           "LastCheckpoint", "MixUpCutMix", "PrintPredictions", "PrintTopK", "TextSamples", "WandbRun"]
