"""Normalizing flows built on invconv_core: layers, models, data, and the functions behind the
command-line tools (each takes a config value and returns a result value).

Direction and sign convention: ``forward(x) -> (z, logabsdet)`` maps data → latent with
``logabsdet = log|det ∂z/∂x|``; ``inverse(z) -> (x, logabsdet)`` maps latent → data with the
negated log-det.
"""

from .bpd import bits_per_dim, dequantize, quantize
from .checkpoints import load_checkpoint
from .classify import ClassifierConfig, ClassifierResult, InvConvClassifier, train_classifier
from .comparison import CompareConfig, CompareResult, compare
from .data import DATASET_INFO, DATASETS, DatasetInfo, ImageData, load_dataset
from .errors import CheckpointError, FlowError, RunExistsError, RunLockedError, TrainingDiverged
from .layers import (ActNorm, AffineCoupling, Conv1x1, FlowSequence, InvConv2d, LogitTransform,
                     SmoothLeakyReLU, Squeeze)
from .depth_sweep import DepthSweepConfig, DepthSweepResult, compare_depths
from .models import (ALL_MODELS, CNN_MODELS, MODELS, REGISTRY, FlowConfig, MultiScaleFlow,
                     SplitPrior, build_flow, register_model)
from .sampling import load_flow, sample
from .timing import matched_config, time_models
from .training import TrainConfig, TrainResult, evaluate_bpd, fit

__all__ = [
    # layers and models
    "ActNorm", "AffineCoupling", "Conv1x1", "FlowSequence", "InvConv2d", "LogitTransform",
    "SmoothLeakyReLU", "Squeeze", "SplitPrior", "MODELS", "CNN_MODELS", "ALL_MODELS", "REGISTRY",
    "register_model", "FlowConfig", "MultiScaleFlow", "build_flow", "matched_config",
    # data and bits/dim
    "DATASET_INFO", "DATASETS", "DatasetInfo", "ImageData", "load_dataset", "bits_per_dim",
    "dequantize", "quantize",
    # what the tools do
    "TrainConfig", "TrainResult", "fit", "evaluate_bpd", "sample", "load_flow", "load_checkpoint",
    "time_models", "CompareConfig", "CompareResult", "compare", "ClassifierConfig",
    "ClassifierResult", "InvConvClassifier", "train_classifier", "DepthSweepConfig",
    "DepthSweepResult", "compare_depths",
    # errors
    "FlowError", "CheckpointError", "RunExistsError", "RunLockedError", "TrainingDiverged",
]
