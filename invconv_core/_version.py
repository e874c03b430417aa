__version__ = "0.3.1"  # 0.3.1: one migration rule for saved settings (TrainConfig.threads added), run locks of every run a comparison touches; 0.3.0: the model registry and CNN-only flows
