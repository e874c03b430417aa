__version__ = "0.3.0"  # 0.3.0: the model registry and CNN-only flows; a comparison holds a run template (CompareConfig.run); TrainResult.steps is optimizer_steps
