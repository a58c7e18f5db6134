"""Save and load models as one safetensors file: the weights, plus the config (and the
tokenizer, when there is one) as JSON in the file's metadata. Nothing is ever unpickled.

Every file the package writes goes through `_write_atomically` (temporary file beside the target,
then `os.replace`): a reader sees the old file or the new one, never half of one. Every read
(`read_safetensors`, `load_file`) opens the file once and takes header and tensors through that one
handle, so a concurrent replace cannot mix two versions. Headers are parsed and checked before any
tensor data is read; tensors are read one at a time into fresh memory (no mapping that a file
changed in place could pull from under us), and NaN / inf weights are refused (`check_finite_weights`).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, NamedTuple

import torch

from .config import ModelConfig
from .tokenizer import Tokenizer
from .transformer import Transformer, from_tensors, param_shapes

FORMAT = "circwidgets-1"
STALE_TMP_SECONDS = 600.0  # a temporary untouched this long belongs to a dead writer (on any host)
_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header
_MAX_NUMEL = 2**63 - 1  # torch sizes are int64: a larger shape is corrupted, even with a zero dimension
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


def read_header(fh: BinaryIO, size: int, path: Path) -> tuple[dict, int]:
    """The safetensors header of the open file `fh` (`size` bytes), reading the header bytes only:
    (header dict, offset of the data)."""
    fh.seek(0)
    first = fh.read(8)
    n = int.from_bytes(first, "little") if len(first) == 8 else 0
    rest = fh.read(n) if len(first) == 8 and n <= _MAX_HEADER and 8 + n <= size else b""
    return _header(first + rest, size, path)


class TensorEntry(NamedTuple):
    """A tensor's header entry, checked: where its bytes are (absolute `offset`, `nbytes`) and what they hold."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    offset: int
    nbytes: int


def tensor_entry(header: dict, name: str, start: int, size: int, path: Path, float_only: bool) -> TensorEntry:
    """The checked header entry of tensor `name` (no data is read): `ModelFileError` naming the file and
    the tensor for a malformed entry, a non-float dtype (with `float_only`), or data outside the file."""
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
    numel, extent = 1, 1  # extent: the product of the nonzero dimensions (bounded even when numel is 0)
    for d in shape:
        numel *= d
        extent *= d or 1
    if extent > _MAX_NUMEL:
        raise ModelFileError(f"{path}: tensor {name} has shape {shape}, too large for any tensor (corrupted header)")
    nbytes = numel * dtype.itemsize
    if min(shape, default=0) < 0 or not (isinstance(b, int) and isinstance(e, int)) or e - b != nbytes or b < 0 \
            or start + e > size:
        raise ModelFileError(f"{path}: tensor data of {name} is truncated or corrupted "
                             f"(offsets {b}..{e}, shape {shape}, file of {size} bytes)")
    return TensorEntry(dtype, tuple(shape), start + b, nbytes)


def read_into(fh: BinaryIO, offset: int, out: torch.Tensor, path: Path, name: str) -> None:
    """Fill the contiguous uint8 tensor `out` with the file's bytes from `offset` on."""
    view = memoryview(out.numpy()).cast("B")
    fh.seek(offset)
    got = 0
    while got < len(view):
        n = fh.readinto(view[got:])
        if not n:
            raise ModelFileError(f"{path}: tensor data of {name} ends early (the file is shorter than its header "
                                 "says: truncated, or changed while being read)")
        got += n


def bytes_as(raw: torch.Tensor, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    """The little-endian bytes `raw` (uint8) as a `dtype` tensor of `shape` (no copy on little-endian hosts)."""
    if sys.byteorder != "little" and dtype.itemsize > 1:  # pragma: no cover - safetensors is little-endian
        raw = raw.view(-1, dtype.itemsize).flip(1).reshape(-1)
    return raw.view(dtype).view(shape)


def read_tensor(fh: BinaryIO, entry: TensorEntry, path: Path, name: str) -> torch.Tensor:
    """Tensor `name` (its checked `entry`) read from `fh` into fresh memory, in its stored dtype."""
    if entry.nbytes == 0:
        return torch.empty(entry.shape, dtype=entry.dtype)
    raw = torch.empty(entry.nbytes, dtype=torch.uint8)
    read_into(fh, entry.offset, raw, path, name)
    return bytes_as(raw, entry.dtype, entry.shape)


def check_finite_weights(t: torch.Tensor, path: Path | str, name: str,
                         cast_from: torch.dtype | None = None) -> torch.Tensor:
    """`t`, or `ModelFileError` naming the file and the tensor when it holds NaN or inf (every result
    computed from such a weight would be NaN). `cast_from`: the stored dtype `t` was converted from,
    named in the message when the conversion is what overflowed."""
    if not t.is_floating_point() or t.is_meta or t.numel() == 0:
        return t
    # min and max propagate NaN and are +-inf when any value is: one reduction, no temporary of t's size
    # (isfinite would allocate several, and is ~15x slower on bfloat16)
    lo, hi = torch.aminmax(t)
    if bool(torch.isfinite(lo)) and bool(torch.isfinite(hi)):
        return t
    n_nan, n_bad = int(torch.isnan(t).sum()), int((~torch.isfinite(t)).sum())
    how = f"{n_nan} NaN, {n_bad - n_nan} infinite"
    if cast_from is not None and cast_from != t.dtype:
        how += f", after conversion from {cast_from} to {t.dtype}: values beyond its range"
    raise ModelFileError(f"{path}: tensor {name} has non-finite values ({how}); refusing to load corrupted weights")


def open_model_file(path: Path) -> tuple[BinaryIO, int]:
    """`path` opened for reading (unbuffered) and its size; `ModelFileError` when it is missing, not a
    file, unreadable or empty."""
    try:
        fh = open(path, "rb", buffering=0)
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such model file") from None
    except IsADirectoryError:
        raise ModelFileError(f"{path}: is a directory, not a model file") from None
    except OSError as e:
        raise ModelFileError(f"{path}: cannot open the model file ({e.strerror})") from None
    size = os.fstat(fh.fileno()).st_size
    if size == 0:
        fh.close()
        raise ModelFileError(f"{path}: not a readable safetensors file (truncated or corrupted?): empty file")
    return fh, size


def read_safetensors(path: str | os.PathLike, tensors: bool = True, float_only: bool = True
                     ) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a safetensors file, both through ONE open handle: a concurrent atomic
    replace of `path` cannot give one version's metadata and another's tensors. Every header entry
    is checked before any data is read. `float_only`: refuse any tensor that is not
    float16/bfloat16/float32/float64 (`ModelFileError` naming it; model weights), else also integer,
    bool and float8 ones (optimizer state). The tensors are fresh memory, independent of the file.
    `tensors=False`: metadata only."""
    path = Path(path)
    fh, size = open_model_file(path)
    with fh:
        header, start = read_header(fh, size, path)
        meta = dict(header.pop("__metadata__", {}))
        if not tensors:
            return meta, {}
        entries = {name: tensor_entry(header, name, start, size, path, float_only) for name in header}
        return meta, {name: read_tensor(fh, e, path, name) for name, e in entries.items()}


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata (str -> str) of a safetensors file."""
    return read_safetensors(path, tensors=False)[0]


def load_file(path: str | os.PathLike, device: str | torch.device = "cpu",
              dtype: torch.dtype = torch.float32) -> Transformer:
    """Load a model saved by `save`. Raises `ModelFileError` naming the problem on a bad file.

    The header (metadata, names, dtypes, shapes, offsets) is checked in full before any tensor data
    is read; then each tensor is read, cast to `dtype` and checked finite, one at a time, into a
    model built without initialising weights (peak memory: the model plus one stored tensor; the
    global RNG is not touched)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    fh, size = open_model_file(path)
    with fh:
        header, start = read_header(fh, size, path)
        meta = dict(header.pop("__metadata__", {}))
        if meta.get("format") != FORMAT or "config" not in meta:
            raise ModelFileError(f"{path}: not a circwidgets model file (metadata has no circwidgets config)")
        try:
            cfg = ModelConfig.from_dict(json.loads(meta["config"]))
        except (ValueError, TypeError) as e:
            raise ModelFileError(f"{path}: invalid config in metadata: {e}") from e
        expected = param_shapes(cfg)
        missing = sorted(set(expected) - set(header))
        unexpected = sorted(set(header) - set(expected))
        if missing or unexpected:
            raise ModelFileError(f"{path}: tensors do not match the config: missing {missing}, "
                                 f"unexpected {unexpected}")
        entries = {name: tensor_entry(header, name, start, size, path, float_only=True) for name in expected}
        for name, shape in expected.items():
            if entries[name].shape != shape:
                raise ModelFileError(f"{path}: tensor {name} has shape {entries[name].shape}, config requires {shape}")
        tensors = {}
        for name, entry in entries.items():
            tensors[name] = check_finite_weights(read_tensor(fh, entry, path, name).to(dtype), path, name, entry.dtype)
    model = from_tensors(cfg, tensors)
    if "tokenizer" in meta:
        try:
            model.tokenizer = Tokenizer.from_json(meta["tokenizer"], source=f"{path} (metadata 'tokenizer')")
        except ValueError as e:
            raise ModelFileError(str(e)) from None
    model.metadata = meta
    return model.to(device).eval()
