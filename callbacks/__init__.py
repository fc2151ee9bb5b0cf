"""Small Lightning callbacks of the zoo (SWA, EMA and EarlyStopping are Lightning's own).

Stackable presets: zoo fit --config configs/cifar_cnn.yaml --config configs/callbacks/mixup.yaml (see that folder).
"""

from callbacks.averaging_check import AveragingCheck
from callbacks.distillation import Distillation
from callbacks.image_grid import ImageGrid
from callbacks.image_writer import ImageWriter
from callbacks.mixup import MixUpCutMix
from callbacks.predictions import PrintTopK
from callbacks.print_predictions import PrintPredictions
from callbacks.text_samples import TextSamples
from callbacks.wandb_tools import WandbRun

__all__ = ["AveragingCheck", "Distillation", "ImageGrid", "ImageWriter", "MixUpCutMix", "PrintPredictions", "PrintTopK", "TextSamples", "WandbRun"]
