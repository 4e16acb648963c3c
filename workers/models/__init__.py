"""The network builders (being split into one module per model with a torch-free descriptor)."""
from workers.models.networks import MODELS, build_model, model_options  # noqa: F401
