"""Weights: one format, a hookable forward pass, LN folding, safetensors I/O, converters."""

from .config import ModelConfig
from .convert import ConversionError, from_hf, from_transformer_lens
from .fold import fold_layernorm
from .hooks import ActivationCache, HookPoint, get_act_name
from .io import ModelFileError, load_file, save
from .tokenizer import Tokenizer
from .transformer import Transformer, param_shapes

__all__ = [
    "ActivationCache", "ConversionError", "HookPoint", "ModelConfig", "ModelFileError", "Tokenizer", "Transformer",
    "fold_layernorm", "from_hf", "from_transformer_lens", "get_act_name", "load_file", "param_shapes", "save",
]
