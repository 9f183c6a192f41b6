"""The training engine behind `kdgrid train`: config, data, model I/O, the KD Trainer, DeepSpeed."""
