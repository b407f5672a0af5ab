"""qaft training side (PyTorch): models, stage-1 training, evaluation, import."""
