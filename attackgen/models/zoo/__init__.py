"""Built-in models and data: small classifiers with shipped weights, and data that ships offline."""

from attackgen.models.zoo.data import BUILTIN_DATA, load_builtin_data
from attackgen.models.zoo.models import BUILTIN_MODELS, MODEL_INFO, load_builtin_model, model_info

__all__ = ["BUILTIN_DATA", "BUILTIN_MODELS", "MODEL_INFO", "load_builtin_data", "load_builtin_model", "model_info"]
