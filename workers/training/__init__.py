"""Training: the recipe and the masked training loop."""
