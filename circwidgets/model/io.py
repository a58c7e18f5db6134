"""Save and load models as one safetensors file: the weights, plus the config (and the
tokenizer, when there is one) as JSON in the file's metadata. Nothing is ever unpickled."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from .config import ModelConfig
from .tokenizer import Tokenizer
from .transformer import Transformer, param_shapes

FORMAT = "circwidgets-1"


class ModelFileError(ValueError):
    """A model file that is missing, truncated, corrupted or does not match its config."""


def _write_atomically(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then `os.replace` it: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    return _write_atomically(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                            metadata: dict[str, str]) -> Path:
    """Write a safetensors file atomically (temporary file + `os.replace`)."""
    from safetensors.torch import save_file

    return _write_atomically(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def save(model: Transformer, path: str | os.PathLike, dtype: torch.dtype | None = None,
         extra_metadata: dict[str, str] | None = None) -> Path:
    """Write `model` to `path` (a `.safetensors` file) atomically; `dtype` e.g. torch.float16 for storage."""
    tensors = {k: (v.detach().to(dtype) if dtype else v.detach()).cpu().contiguous()
               for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "config": model.cfg.to_json()}
    if model.tokenizer is not None:
        meta["tokenizer"] = model.tokenizer.to_json()
    meta.update(extra_metadata or {})
    return atomic_save_safetensors(tensors, path, meta)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise ModelFileError(f"{path}: not a readable safetensors file (truncated or corrupted?): {e}") from e


def load_file(path: str | os.PathLike, device: str | torch.device = "cpu",
              dtype: torch.dtype = torch.float32) -> Transformer:
    """Load a model saved by `save`. Raises `ModelFileError` naming the problem on a bad file."""
    from safetensors.torch import load_file as _load

    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    meta = read_metadata(path)
    if meta.get("format") != FORMAT or "config" not in meta:
        raise ModelFileError(f"{path}: not a circwidgets model file (metadata has no circwidgets config)")
    try:
        cfg = ModelConfig.from_dict(json.loads(meta["config"]))
    except (ValueError, TypeError) as e:
        raise ModelFileError(f"{path}: invalid config in metadata: {e}") from e
    try:
        tensors = _load(str(path))
    except Exception as e:
        raise ModelFileError(f"{path}: tensor data is truncated or corrupted: {e}") from e
    expected = param_shapes(cfg)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ModelFileError(f"{path}: tensors do not match the config: missing {missing}, unexpected {unexpected}")
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise ModelFileError(
                f"{path}: tensor {name} has shape {tuple(tensors[name].shape)}, config requires {shape}"
            )
    model = Transformer(cfg, seed=None)
    model.load_state_dict({k: v.to(dtype) for k, v in tensors.items()})
    if "tokenizer" in meta:
        model.tokenizer = Tokenizer.from_json(meta["tokenizer"])
    model.metadata = meta
    return model.to(device).eval()
