"""The training loop and the stages that run it."""
