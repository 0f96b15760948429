"""Closed-set training, DenseHybrid fine-tuning and MOoSe probe training."""
