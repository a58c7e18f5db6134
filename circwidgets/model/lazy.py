"""A Hugging Face checkpoint directory read lazily: weights read from the files and converted one layer
(or one vocabulary block) at a time, shared Gram matrices cached on disk.

`LazyModel(path)` (what `cw.from_hf(path, lazy=True)` returns) reads `config.json`, the shard index
(`model.safetensors.index.json`, or a single `model.safetensors`) and each shard's header, and checks
every tensor's shape against the config. Tensors stay in the files, in their stored dtype (bfloat16
included): nothing is read until a layer is asked for, and then only its tensors (or those rows of
the embedding), through a file handle opened for that read, checked finite. Each shard's identity
(device, inode, size, mtime) is recorded when it is opened and checked before and after every read:
a checkpoint overwritten, replaced or truncated since raises `ModelFileError` ("changed on disk").
(A long-lived memory mapping could not do that: a truncated file kills the process with SIGBUS when
a vanished page is touched, and a file rewritten in place silently hands out the new bytes.)

Name mapping is the converter's (`convert.from_hf`), applied to a *sub-state-dict*: the tensors of
one layer renamed to layer 0 (or a block of vocabulary rows of the embedding and unembedding), every
other tensor of the checkpoint replaced by a `meta` tensor of its shape and dtype. The converter
builds a one-layer `Transformer` from it (meta parameters cost no memory) and `fold.fold_state_dict`
folds the normalisation weights exactly as the eager engine does (`engine.prep.weights`; the circuits'
weights with `fold.circuit_folds` too: `embed_scale`, q/k norm and post-norm weights). So a lazy
model's layer `l` is, to the bit, layer `l` of `from_hf` on the same checkpoint, folded.

Gram matrices (`W_E^T W_E`, `W_U W_E`, folded, float32, `[d_model, d_model]`) are computed in one
blockwise pass over the vocabulary and cached under `cache_dir` (argument, else `$CIRCWIDGETS_CACHE`,
else `~/.cache/circwidgets`), keyed by a hash of the checkpoint files' identities (name, size,
mtime) and `config.json`'s bytes plus the quantity. Cache files are written atomically
(`io.atomic_save_safetensors`) and carry a SHA-256 of their data: a truncated or corrupted file is
rejected (and recomputed), never read back as valid.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import mmap
import os
import re
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from .config import ModelConfig
from .fold import circuit_folds
from .io import (
    ModelFileError,
    TensorEntry,
    atomic_save_safetensors,
    bytes_as,
    check_finite_weights,
    open_model_file,
    read_header,
    read_into,
    read_safetensors,
    read_tensor,
    tensor_entry,
)

__all__ = ["LazyModel", "default_cache_dir", "is_lazy"]

# 2: Gram matrices and skip-trigram factors with the circuit folds (`embed_scale`, q/k norms, post-norms):
# entries of format 1 of Gemma 2/3, Qwen3 and OLMo-2 checkpoints lacked them
CACHE_FORMAT = "circwidgets-cache-2"
_LAYER_KEY = re.compile(r"^(?P<pre>(?:.*\.)?(?:layers|h))\.(?P<l>\d+)\.(?P<rest>.*)$")
_EMBED_KEYS = re.compile(r"(^|\.)(embed_tokens|wte|embed_in)\.weight$|^(lm_head|embed_out)\.weight$")


def default_cache_dir() -> Path:
    """`$CIRCWIDGETS_CACHE`, else `~/.cache/circwidgets`."""
    env = os.environ.get("CIRCWIDGETS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "circwidgets"


def is_lazy(model: Any) -> bool:
    """Whether `model` is a `LazyModel` (the engine's streamed code path)."""
    return isinstance(model, LazyModel)


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class _Shard:
    """One safetensors shard: its checked header and the file's identity when it was opened. Tensors
    are read on demand through a handle opened for that read (module docstring: no mapping)."""

    def __init__(self, path: Path):
        self.path = path
        fh, self.size = open_model_file(path)
        with fh:
            self.identity = _identity(os.fstat(fh.fileno()))
            self.header, self.start = read_header(fh, self.size, path)
        self.header.pop("__metadata__", None)
        for name in self.header:  # every entry well-formed (sizes, offsets) before anything relies on it
            tensor_entry(self.header, name, self.start, self.size, path, float_only=False)

    def spec(self, name: str) -> tuple[torch.dtype, tuple[int, ...]]:
        e = self._entry(name)
        return e.dtype, e.shape

    def _entry(self, name: str) -> TensorEntry:
        return tensor_entry(self.header, name, self.start, self.size, self.path, float_only=True)

    def _check(self, fh) -> None:
        if _identity(os.fstat(fh.fileno())) != self.identity:
            raise ModelFileError(f"{self.path}: changed on disk since it was opened; load it again")

    @contextlib.contextmanager
    def _opened(self):
        """The shard opened again, its identity checked on entry and on exit (also when the read in
        the block failed: a file truncated while being read says so)."""
        try:
            fh = open(self.path, "rb", buffering=0)
        except OSError as e:
            raise ModelFileError(f"{self.path}: changed on disk since it was opened ({e.strerror}); "
                                 "load it again") from None
        with fh:
            self._check(fh)
            try:
                yield fh
            finally:
                self._check(fh)

    def check_unchanged(self) -> None:
        """`ModelFileError` if the shard changed on disk since it was opened."""
        with self._opened():
            pass

    def tensor(self, name: str, rows: slice | torch.Tensor | None = None) -> torch.Tensor:
        """Tensor `name` (or its rows `rows`, a slice or ids, along the first dimension), read into fresh
        memory in its stored dtype, from the file as it was when opened (else `ModelFileError`)."""
        entry = self._entry(name)
        with self._opened() as fh:
            t = read_tensor(fh, entry, self.path, name) if rows is None else self._rows(fh, entry, name, rows)
        return check_finite_weights(t, self.path, name)

    @contextlib.contextmanager
    def mapped(self, names: Iterable[str]):
        """`{name: tensor}` of `names` as views into a read-only mapping of the shard, for one eager load
        only (`LazyModel.to_transformer`): the checkpoint's bytes stay file-backed page cache instead of a
        second, anonymous copy next to the converted model. Identity checked on entry and on exit; every
        view is checked finite; the mapping is closed on exit, so a view must not outlive the block
        (`convert._build` copies every converted weight)."""
        with self._opened() as fh:
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            with warnings.catch_warnings():  # a read-only buffer: torch warns that it is not writable
                warnings.simplefilter("ignore")
                whole = torch.frombuffer(mm, dtype=torch.uint8)
                views = {}
                for n in names:
                    e = self._entry(n)
                    raw = whole[e.offset:e.offset + e.nbytes]
                    if e.offset % e.dtype.itemsize:  # safetensors does not promise alignment: copy that one
                        raw = raw.clone()
                    views[n] = check_finite_weights(bytes_as(raw, e.dtype, e.shape), self.path, n)
                del whole
            yield views
            del views
            self.check_unchanged()
        finally:
            try:
                mm.close()
            except BufferError:  # a view still referenced (an exception's traceback): the GC closes it
                pass

    def _rows(self, fh, entry: TensorEntry, name: str, rows: slice | torch.Tensor) -> torch.Tensor:
        """Rows of a tensor, reading only their bytes (contiguous runs of rows: one read each)."""
        n, rest = entry.shape[0], entry.shape[1:]
        row = entry.nbytes // n if n else 0
        if isinstance(rows, slice):
            start, stop, step = rows.indices(n)
            ids = torch.arange(start, stop, step)
        else:
            ids = torch.as_tensor(rows, dtype=torch.long).reshape(-1)
            if ids.numel() and not (-n <= int(ids.min()) and int(ids.max()) < n):
                raise IndexError(f"rows {ids.tolist()[:8]}... out of range for {name} with {n} rows")
            ids = torch.where(ids < 0, ids + n, ids)
        uniq, inverse = torch.unique(ids, sorted=True, return_inverse=True)
        raw = torch.empty(len(uniq) * row, dtype=torch.uint8)
        u = uniq.tolist()
        i = 0
        while i < len(u):  # a run of consecutive rows u[i]..u[j-1]: one read
            j = i + 1
            while j < len(u) and u[j] == u[j - 1] + 1:
                j += 1
            read_into(fh, entry.offset + u[i] * row, raw[i * row:j * row], self.path, name)
            i = j
        out = bytes_as(raw, entry.dtype, (len(u), *rest))
        return out if torch.equal(uniq, ids) else out[inverse]


class LazyModel:
    """A checkpoint directory whose weights are read one layer at a time (module docstring).

    cfg: the `ModelConfig` `from_hf` gives this checkpoint; tokenizer: carried when the directory has
    tokenizer files (`AutoTokenizer`), else None. The engine's weights-only functions accept it
    (they stream: `circwidgets.engine.streaming`).
    """

    def __init__(self, path: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                 tokenizer: Any = None, block_rows: int = 8192):
        from transformers import AutoConfig

        self.path = Path(path)
        if not (self.path / "config.json").is_file():
            raise ModelFileError(f"{self.path}: not a Hugging Face checkpoint directory (no config.json)")
        self.hf_config = AutoConfig.from_pretrained(str(self.path))
        index = self.path / "model.safetensors.index.json"
        if index.is_file():
            weight_map = _read_index(index)
        elif (self.path / "model.safetensors").is_file():
            weight_map = None
        else:
            raise ModelFileError(f"{self.path}: no model.safetensors(.index.json): only safetensors checkpoints "
                                 "can be read lazily")
        files = sorted(set(weight_map.values())) if weight_map else ["model.safetensors"]
        for f in files:
            if not (self.path / f).is_file():
                raise ModelFileError(f"{index}: names the shard {f!r}, which is not in {self.path}")
        self._shards = {f: _Shard(self.path / f) for f in files}
        if weight_map is None:
            weight_map = {n: "model.safetensors" for n in self._shards["model.safetensors"].header}
        missing = [n for n, f in weight_map.items() if n not in self._shards[f].header]
        if missing:
            raise ModelFileError(f"{self.path}: the index names tensors its shards do not hold: {missing[:5]}")
        self._where = dict(weight_map)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.block_rows = block_rows
        self.reads: dict[str, int] = {}  # tensor name -> times it was read (tests, memory)
        self._stored_dtype: torch.dtype | None = None  # the widest stored dtype (`_check_cast`)
        self._identity = self._files_identity()
        self.cfg = self._convert(layer=None, rows=None).cfg  # everything meta: the config (and every shape) only
        self.tokenizer = None
        self._carry_tokenizer(tokenizer)
        self._memo: dict[Any, Any] = {}

    # ------------------------------------------------------------------ identity and tokenizer
    def _files_identity(self) -> str:
        h = hashlib.sha256()
        h.update((self.path / "config.json").read_bytes())
        for name in sorted(self._shards):
            st = (self.path / name).stat()
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    def _carry_tokenizer(self, tokenizer: Any) -> None:
        from .tokenizer import Tokenizer

        if tokenizer is None and any((self.path / f).is_file() for f in ("tokenizer.json", "vocab.json")):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(self.path))
        if tokenizer is not None:
            self.tokenizer = Tokenizer.from_any(tokenizer)

    def __repr__(self) -> str:
        c = self.cfg
        return (f"LazyModel({str(self.path)!r}, n_layers={c.n_layers}, n_heads={c.n_heads}, n_kv={c.n_kv}, "
                f"d_model={c.d_model}, d_vocab={c.d_vocab}, dtype={self.dtype}, cache_dir={str(self.cache_dir)!r})")

    @property
    def dtype(self) -> torch.dtype:
        """Stored dtype of the embedding."""
        return self._spec(self._embed_key())[0]

    # ------------------------------------------------------------------ raw tensors
    def _spec(self, name: str) -> tuple[torch.dtype, tuple[int, ...]]:
        return self._shards[self._where[name]].spec(name)

    def raw(self, name: str, rows: slice | torch.Tensor | None = None) -> torch.Tensor:
        """The checkpoint tensor `name` (or its rows `rows`: a slice or ids), read from the file in its
        stored dtype (fresh memory; `ModelFileError` if the file changed since it was opened)."""
        self._count_reads([name])
        return self._shards[self._where[name]].tensor(name, rows)

    def _count_reads(self, names: Iterable[str]) -> None:
        for n in names:
            self.reads[n] = self.reads.get(n, 0) + 1

    def _view(self, name: str) -> torch.Tensor:
        """The embedding / unembedding for the config pass: its shape only (in a checkpoint a head of
        its own is a tensor of its own; the converter counts a meta head as untied)."""
        return self._meta(name)

    def _meta(self, name: str) -> torch.Tensor:
        dt, shape = self._spec(name)
        return torch.empty(shape, dtype=dt, device="meta")

    def _embed_key(self) -> str:
        for k in self._where:
            m = _EMBED_KEYS.search(k)
            if m and m.group(2):
                return k
        raise ModelFileError(f"{self.path}: no token embedding among the tensors ({sorted(self._where)[:5]}...)")

    # ------------------------------------------------------------------ conversion of a subset
    def _sub_state_dict(self, layer: int | None, rows: slice | torch.Tensor | None,
                        mlp: bool = False) -> dict[str, torch.Tensor]:
        """Layer `layer`'s non-MLP tensors (MLP too with `mlp`; renamed to layer 0) and, with `rows`
        (a slice or token ids), those embedding / unembedding rows, real; every other tensor meta."""
        sd = {}
        for name in self._where:
            m = _LAYER_KEY.match(name)
            if layer is None and rows is None:  # the config only: shapes, and whether W_U is tied to W_E
                tie_check = _EMBED_KEYS.search(name)  # (`_view`: meta here, real for a module)
                sd[name] = self._view(name) if tie_check else self._meta(name)
            elif m:
                if int(m.group("l")) != (layer if layer is not None else 0):
                    continue
                key = f"{m.group('pre')}.0.{m.group('rest')}"
                real = layer is not None and (mlp or ".mlp." not in f".{m.group('rest')}")
                sd[key] = self.raw(name) if real else self._meta(name)
            elif _EMBED_KEYS.search(name):
                sd[name] = self.raw(name, rows) if rows is not None else self._meta(name)
            else:  # final norm, positions: small
                sd[name] = self.raw(name) if (layer is not None or rows is not None) else self._meta(name)
        return sd

    def _convert(self, layer: int | None, rows: slice | torch.Tensor | None, mlp: bool = False):
        """`from_hf` on the sub-state-dict: a one-layer `Transformer` (meta where not asked for). A
        conversion error about one tensor names its file (raised by the config pass at open, which
        checks every tensor's shape under its own name)."""
        from .convert import ConversionError, from_hf

        sd = self._sub_state_dict(layer, rows, mlp)
        cfg = copy.deepcopy(self.hf_config)
        if isinstance(rows, torch.Tensor):
            n_vocab = len(rows)
        else:
            n_vocab = None if rows is None else len(range(*rows.indices(self._spec(self._embed_key())[1][0])))
        if layer is not None or rows is not None:
            cfg.num_hidden_layers = 1  # (GPT-2: an alias of n_layer)
            if getattr(cfg, "layer_types", None):
                cfg.layer_types = [cfg.layer_types[layer or 0]]
        if n_vocab is not None:
            cfg.vocab_size = n_vocab
        try:
            return from_hf(sd, config=cfg, check=False)
        except ConversionError as e:
            if e.tensor is None:
                raise
            where = self.path / self._where[e.tensor] if e.tensor in self._where else self.path
            raise ModelFileError(f"{where}: {e}") from e

    def _folded(self, layer: int | None, rows: slice | None, dtype: torch.dtype,
                biases: bool = False) -> dict[str, torch.Tensor]:
        """Folded tensors of one layer (or of vocabulary rows); `biases=True` folds and creates the biases
        too, as `engine.prep` does (path expansion), else the weight matrices only (circuits)."""
        from .fold import fold_state_dict

        one = self._convert(layer, rows)
        # meta tensors (not asked for) are left out: the fold skips readers and writers it is not given
        params = {n: p.detach().to(dtype) for n, p in one.named_parameters() if not p.is_meta}
        self._check_cast(params.items())
        cfg = one.cfg
        if "W_E" not in params:
            cfg = ModelConfig.from_dict({**cfg.to_dict(), "tied_embeddings": False})
        sd, _ = fold_state_dict(params, cfg, biases=biases)
        return sd

    def layer_weights(self, layer: int, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """Folded attention weights of one layer as the eager circuits read them (`engine.prep.weights`),
        cast to `dtype`: `W_Q [H, D, E]`, `W_O [H, E, D]` and `W_K`, `W_V` `[n_kv, D, E]` (shared by groups
        of query heads: head h reads `cfg.kv_head_of(h)`; not expanded)."""
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < self.cfg.n_layers:
            raise IndexError(f"layer={layer!r} is out of range: this model has layers 0..{self.cfg.n_layers - 1}")
        sd = self._folded(layer, None, dtype)
        kv = "_" if self.cfg.grouped_kv else ""
        # the eager circuits' folds too (q/k norm weights, the attention post-norm's weight): without them the
        # streamed circuits of Qwen3, Gemma 2/3 and OLMo-2 were not the eager ones
        names = ("W_Q", kv + "W_K", kv + "W_V", "W_O")  # (shared K/V heads under their own names: `_W_K`)
        w = circuit_folds(self.cfg, {n: sd[n] for n in names}, sd)
        return {n.lstrip("_"): w[n][0] for n in names}

    def layer_module(self, layer: int, rows: slice | torch.Tensor | None = None,
                     dtype: torch.dtype = torch.float32):
        """Layer `layer` whole (attention and MLP, unfolded: the forward pass's own weights) as a
        one-layer `Transformer` in `dtype`, its embedding / unembedding cut to `rows` (a slice or token
        ids; default the first row only). For the layer-by-layer forward pass (`LazySource`)."""
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < self.cfg.n_layers:
            raise IndexError(f"layer={layer!r} is out of range: this model has layers 0..{self.cfg.n_layers - 1}")
        m = self._convert(layer, slice(0, 1) if rows is None else rows, mlp=True).to(dtype)
        self._check_cast(m.named_parameters())
        return m.eval()

    def check_tokens(self, tokens) -> torch.Tensor:
        """Token ids `[batch, pos]` (long), checked as `Transformer.check_tokens` checks them; text is
        tokenised (BOS first when the model has one)."""
        from types import SimpleNamespace

        from .transformer import Transformer

        if isinstance(tokens, str):
            if self.tokenizer is None:
                raise ValueError("this model has no tokenizer: pass token ids instead of text")
            ids = self.tokenizer.encode(tokens)
            tokens = [([self.cfg.bos_token_id] if self.cfg.bos_token_id is not None else []) + ids]
        return Transformer.check_tokens(SimpleNamespace(cfg=self.cfg, W_E=torch.empty(0)), tokens)

    def vocab_blocks(self, dtype: torch.dtype = torch.float32, desc: str | None = None):
        """Yield `(rows, W_E [b, D], W_U [D, b])` folded (`W_E` times `embed_scale`, as `engine.prep.weights`),
        one block of `block_rows` vocabulary rows at a time."""
        from tqdm.auto import tqdm

        V = self.cfg.d_vocab
        starts = range(0, V, self.block_rows)
        big = V * self.cfg.d_model > 5e7
        for s in tqdm(starts, desc=desc or "vocabulary pass", disable=not big or desc is None, leave=False):
            rows = slice(s, min(s + self.block_rows, V))
            sd = self._folded(None, rows, dtype)
            sd = circuit_folds(self.cfg, {"W_E": sd["W_E"], "W_U": sd["W_U"]}, sd)
            yield rows, sd["W_E"], sd["W_U"]

    # ------------------------------------------------------------------ disk cache
    def cache_key(self, quantity: str) -> str:
        """Hash of the checkpoint's identity and the quantity (the cache file's name)."""
        return hashlib.sha256(f"{CACHE_FORMAT}\n{self._identity}\n{quantity}".encode()).hexdigest()[:32]

    def cache_path(self, quantity: str) -> Path:
        return self.cache_dir / f"{self.cache_key(quantity)}.safetensors"

    def cached(self, quantity: str, compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """`compute()` (a dict of tensors), read from the disk cache when a valid entry exists, else
        computed and written atomically. Also kept in memory for this object's lifetime."""
        if quantity in self._memo:
            return self._memo[quantity]
        path = self.cache_path(quantity)
        out = self._read_cache(path, quantity)
        if out is None:
            out = {k: v.detach().cpu().contiguous() for k, v in compute().items()}
            meta = {"format": CACHE_FORMAT, "quantity": quantity, "key": self.cache_key(quantity),
                    "checkpoint": str(self.path), "sha256": _digest(out)}
            atomic_save_safetensors(out, path, meta)
        self._memo[quantity] = out
        return out

    def _read_cache(self, path: Path, quantity: str) -> dict[str, torch.Tensor] | None:
        if not path.is_file():
            return None
        try:
            meta, tensors = read_safetensors(path)
        except ModelFileError as e:
            warnings.warn(f"ignoring an unreadable cache file (recomputing): {e}", stacklevel=3)
            return None
        if meta.get("key") != self.cache_key(quantity) or meta.get("sha256") != _digest(tensors):
            warnings.warn(f"ignoring a cache file that does not match its contents (recomputing): {path}",
                          stacklevel=3)
            return None
        return tensors

    def cache_info(self) -> dict[str, Any]:
        """`{"dir", "files", "bytes"}` of this checkpoint's entries in the cache directory."""
        files = [p for p in self.cache_dir.glob("*.safetensors")
                 if _cache_meta(p).get("checkpoint") == str(self.path)] if self.cache_dir.is_dir() else []
        return {"dir": str(self.cache_dir), "files": len(files), "bytes": sum(p.stat().st_size for p in files)}

    # ------------------------------------------------------------------ shared Gram matrices
    @torch.no_grad()
    def grams(self) -> dict[str, torch.Tensor]:
        """`{"EE": W_E^T W_E, "UE": W_U W_E}` (and `"PP": W_pos^T W_pos` with learned positions) of the
        folded weights, float32 `[d_model, d_model]`, one blockwise pass over the vocabulary (cached on disk)."""
        def compute() -> dict[str, torch.Tensor]:
            D = self.cfg.d_model
            EE = torch.zeros(D, D, dtype=torch.float32)
            UE = torch.zeros(D, D, dtype=torch.float32)
            for _, W_E, W_U in self.vocab_blocks(desc="Gram matrices (W_E^T W_E, W_U W_E)"):
                EE.addmm_(W_E.T, W_E)
                UE.addmm_(W_U, W_E)
            out = {"EE": EE, "UE": UE}
            if self.cfg.positional in ("standard", "shortformer"):  # small: n_ctx x d_model
                W_pos = self._folded(None, slice(0, 1), torch.float32)["W_pos"]
                out["PP"] = W_pos.T @ W_pos
            return out

        return self.cached("grams", compute)

    # ------------------------------------------------------------------ eager copy
    def to_transformer(self, dtype: torch.dtype | None = torch.float32):
        """The whole model as an eager `Transformer` (`from_hf` on every tensor; for small models and tests)."""
        from .convert import from_hf

        with contextlib.ExitStack() as stack:
            sd = {}
            for f, shard in self._shards.items():  # mapped, not copied: the peak is the converted model
                sd.update(stack.enter_context(shard.mapped([n for n, g in self._where.items() if g == f])))
            self._count_reads(sd)
            m = from_hf(sd, config=self.hf_config, dtype=dtype, check=False)
            del sd  # the conversion copied every weight (`convert._build`): no view of a mapping survives it
        self._check_cast(m.named_parameters())
        m.tokenizer = self.tokenizer
        return m

    def _check_cast(self, named: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Converted weights (finite when read) cast to a dtype narrower than the checkpoint's can
        overflow: refused as non-finite stored weights are."""
        if self._stored_dtype is None:
            self._stored_dtype = max((self._spec(n)[0] for n in self._where), key=lambda d: torch.finfo(d).max)
        for n, t in named:
            if torch.finfo(t.dtype).max < torch.finfo(self._stored_dtype).max:
                check_finite_weights(t, self.path, f"{n} (converted)", cast_from=self._stored_dtype)


def _read_index(index: Path) -> dict[str, str]:
    """The `weight_map` (tensor name -> shard file) of a sharded checkpoint's index, checked."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{index}: not a readable shard index (truncated or corrupted?): {e}") from None
    except (KeyError, TypeError):
        raise ModelFileError(f"{index}: not a shard index (no 'weight_map' object mapping tensors to "
                             "files)") from None
    if not isinstance(weight_map, dict) or not weight_map or not all(
            isinstance(k, str) and isinstance(v, str) and v and Path(v).name == v for k, v in weight_map.items()):
        raise ModelFileError(f"{index}: 'weight_map' must map tensor names to shard file names in this directory")
    return weight_map


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)}\n".encode())
        if t.numel():
            h.update(memoryview(t.view(torch.uint8).numpy()))
    return h.hexdigest()


def _cache_meta(path: Path) -> dict[str, str]:
    try:
        from .io import read_metadata

        return read_metadata(path)
    except ModelFileError:
        return {}
