"""Training: networks from layer lists, data, the training loop, background jobs and pictures."""
