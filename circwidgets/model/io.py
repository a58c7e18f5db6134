"""Save and load models as one safetensors file: the weights, plus the config (and the
tokenizer, when there is one) as JSON in the file's metadata. Nothing is ever unpickled.

Every file the package writes goes through `_write_atomically` (temporary file beside the target,
then `os.replace`): a reader sees the old file or the new one, never half of one. Every read
(`read_safetensors`) opens the file once and takes header and tensors from that one mapping, so a
concurrent replace cannot mix two versions.
"""

from __future__ import annotations

import glob
import hashlib
import json
import mmap
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .config import ModelConfig
from .tokenizer import Tokenizer
from .transformer import Transformer, param_shapes

FORMAT = "circwidgets-1"
STALE_TMP_SECONDS = 600.0  # a temporary untouched this long belongs to a dead writer (on any host)
_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header
# dtypes a model file may hold; anything else (integer, bool, float8) is refused, never silently cast
FLOAT_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
_OTHER_DTYPES = {"I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                 "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


class ModelFileError(ValueError):
    """A model file that is missing, truncated, corrupted or does not match its config."""


_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:  # elsewhere: set and restore (the only portable way to read it)
        old = os.umask(0o022)
        os.umask(old)
    return old


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, owned by someone else
        return True
    return True


def _remove_stale_temporaries(path: Path, now: float | None = None) -> list[Path]:
    """Delete temporaries that earlier saves of `path` left behind when killed: those named by a
    process of this host that no longer exists, and any untouched for `STALE_TMP_SECONDS` (a live
    writer keeps its file's mtime fresh). Returns what was removed."""
    now = time.time() if now is None else now
    removed = []
    host = _host_tag()
    for tmp in path.parent.glob(f"{glob.escape(path.name)}.*.tmp"):
        parts = tmp.name[len(path.name) + 1:-len(".tmp")].split("-")
        try:
            dead = len(parts) == 3 and parts[0] == host and not _pid_alive(int(parts[1]))
            stale = dead or now - tmp.stat().st_mtime > STALE_TMP_SECONDS
            if stale and tmp.is_file():
                tmp.unlink()
                removed.append(tmp)
        except (OSError, ValueError):  # gone meanwhile, or not ours to judge
            continue
    return removed


def _write_atomically(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then `os.replace` it: a crash never leaves
    half a file. The file gets the mode a plain `open(path, "w")` would give (0666 & ~umask), not
    mkstemp's 0600, and temporaries of killed earlier saves of `path` are removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.{_host_tag()}-{os.getpid()}-", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # after `write`: some writers (safetensors) re-create the file
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


def _header(buf, size: int, path: Path) -> tuple[dict, int]:
    """Parse the safetensors header of `buf` (`size` bytes): (header dict, offset of the data)."""
    if size < 8:
        raise ModelFileError(f"{path}: not a readable safetensors file (truncated or corrupted?): only {size} bytes")
    n = int.from_bytes(buf[:8], "little")
    if n > _MAX_HEADER or 8 + n > size:
        raise ModelFileError(f"{path}: not a readable safetensors file (truncated or corrupted?): header of {n} "
                             f"bytes in a file of {size}")
    try:
        header = json.loads(bytes(buf[8:8 + n]))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{path}: not a readable safetensors file (truncated or corrupted?): {e}") from e
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: not a readable safetensors file (header is not a JSON object)")
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ModelFileError(f"{path}: safetensors metadata must map strings to strings")
    return header, 8 + n


def _tensor(buf, header: dict, name: str, start: int, size: int, path: Path, float_only: bool) -> torch.Tensor:
    info = header[name]
    try:
        dt, shape, (b, e) = info["dtype"], list(info["shape"]), info["data_offsets"]
    except (KeyError, TypeError, ValueError) as err:
        raise ModelFileError(f"{path}: tensor {name} has a malformed header entry {info!r}") from err
    if not isinstance(dt, str) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise ModelFileError(f"{path}: tensor {name} has a malformed header entry {info!r}")
    if dt not in FLOAT_DTYPES and not (dt in _OTHER_DTYPES and not float_only):
        kind = "float8" if dt.startswith("F8") else "integer/bool" if dt in _OTHER_DTYPES else "unknown"
        raise ModelFileError(f"{path}: tensor {name} has dtype {dt} ({kind}); model weights must be floating "
                             f"point ({', '.join(FLOAT_DTYPES)}): convert them explicitly before saving")
    dtype = FLOAT_DTYPES.get(dt) or _OTHER_DTYPES[dt]
    numel = 1
    for d in shape:
        numel *= d
    nbytes = numel * dtype.itemsize
    if min(shape, default=0) < 0 or not (isinstance(b, int) and isinstance(e, int)) or e - b != nbytes or b < 0 \
            or start + e > size:
        raise ModelFileError(f"{path}: tensor data of {name} is truncated or corrupted "
                             f"(offsets {b}..{e}, shape {shape}, file of {size} bytes)")
    if numel == 0:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(buf, dtype=dtype, count=numel, offset=start + b).view(shape)


def read_safetensors(path: str | os.PathLike, tensors: bool = True, float_only: bool = True
                     ) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a safetensors file, both from ONE open of it (one private mapping): a
    concurrent atomic replace of `path` cannot give one version's metadata and another's tensors.
    `float_only`: refuse any tensor that is not float16/bfloat16/float32/float64 (`ModelFileError`
    naming it; model weights), else also integer, bool and float8 ones (optimizer state). The tensors
    are copies, independent of the file. `tensors=False`: metadata only."""
    path = Path(path)
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such model file") from None
    except IsADirectoryError:
        raise ModelFileError(f"{path}: is a directory, not a model file") from None
    with fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            raise ModelFileError(f"{path}: not a readable safetensors file (truncated or corrupted?): empty file")
        # a private copy-on-write mapping: writable for torch.frombuffer, never written back
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY) as mm:
            header, start = _header(mm, size, path)
            meta = dict(header.pop("__metadata__", {}))
            out = {}
            if tensors:
                if sys.byteorder != "little":  # pragma: no cover - safetensors is little-endian
                    from safetensors.torch import load

                    return meta, load(bytes(mm))
                for name in header:
                    out[name] = _tensor(mm, header, name, start, size, path, float_only).clone()
    return meta, out


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata (str -> str) of a safetensors file."""
    return read_safetensors(path, tensors=False)[0]


def load_file(path: str | os.PathLike, device: str | torch.device = "cpu",
              dtype: torch.dtype = torch.float32) -> Transformer:
    """Load a model saved by `save`. Raises `ModelFileError` naming the problem on a bad file."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    meta, tensors = read_safetensors(path)
    if meta.get("format") != FORMAT or "config" not in meta:
        raise ModelFileError(f"{path}: not a circwidgets model file (metadata has no circwidgets config)")
    try:
        cfg = ModelConfig.from_dict(json.loads(meta["config"]))
    except (ValueError, TypeError) as e:
        raise ModelFileError(f"{path}: invalid config in metadata: {e}") from e
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
    model = Transformer(cfg, seed=None).to(dtype)  # (load_state_dict copies into the parameters' own dtype)
    model.load_state_dict({k: v.to(dtype) for k, v in tensors.items()})
    if "tokenizer" in meta:
        try:
            model.tokenizer = Tokenizer.from_json(meta["tokenizer"], source=f"{path} (metadata 'tokenizer')")
        except ValueError as e:
            raise ModelFileError(str(e)) from None
    model.metadata = meta
    return model.to(device).eval()
