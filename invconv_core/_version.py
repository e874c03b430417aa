__version__ = "0.2.0"  # 0.2.0: the flow steps as published (the k×k models gained a 1×1 conv)
