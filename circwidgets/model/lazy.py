"""A Hugging Face checkpoint directory read lazily: weights memory-mapped, converted one layer (or one
vocabulary block) at a time, shared Gram matrices cached on disk.

`LazyModel(path)` (what `cw.from_hf(path, lazy=True)` returns) reads `config.json`, the shard index
(`model.safetensors.index.json`, or a single `model.safetensors`) and each shard's header. Tensors
stay in the files (a private read-only mapping per shard, in their stored dtype, bfloat16 included):
nothing is read until a layer is asked for.

Name mapping is the converter's (`convert.from_hf`), applied to a *sub-state-dict*: the tensors of
one layer renamed to layer 0 (or a block of vocabulary rows of the embedding and unembedding), every
other tensor of the checkpoint replaced by a `meta` tensor of its shape and dtype. The converter
builds a one-layer `Transformer` from it (meta parameters cost no memory) and `fold.fold_state_dict`
folds the normalisation weights exactly as the eager engine does (`engine.prep.weights`). So a lazy
model's layer `l` is, to the bit, layer `l` of `from_hf` on the same checkpoint, folded.

Gram matrices (`W_E^T W_E`, `W_U W_E`, folded, float32, `[d_model, d_model]`) are computed in one
blockwise pass over the vocabulary and cached under `cache_dir` (argument, else `$CIRCWIDGETS_CACHE`,
else `~/.cache/circwidgets`), keyed by a hash of the checkpoint files' identities (name, size,
mtime) and `config.json`'s bytes plus the quantity. Cache files are written atomically
(`io.atomic_save_safetensors`) and carry a SHA-256 of their data: a truncated or corrupted file is
rejected (and recomputed), never read back as valid.
"""

from __future__ import annotations

import copy
import hashlib
import json
import mmap
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .config import ModelConfig
from .io import FLOAT_DTYPES, ModelFileError, _header, _tensor, atomic_save_safetensors, read_safetensors

__all__ = ["LazyModel", "default_cache_dir", "is_lazy"]

CACHE_FORMAT = "circwidgets-cache-1"
_LAYER_KEY = re.compile(r"^(?P<pre>(?:.*\.)?(?:layers|h))\.(?P<l>\d+)\.(?P<rest>.*)$")
_EMBED_KEYS = re.compile(r"(^|\.)(embed_tokens|wte|embed_in)\.weight$|^(lm_head|embed_out)\.weight$")


def default_cache_dir() -> Path:
    """`$CIRCWIDGETS_CACHE`, else `~/.cache/circwidgets`."""
    env = os.environ.get("CIRCWIDGETS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "circwidgets"


def is_lazy(model: Any) -> bool:
    """Whether `model` is a `LazyModel` (the engine's streamed code path)."""
    return isinstance(model, LazyModel)


class _Shard:
    """One safetensors shard: a private mapping (copy-on-write, never written) and its parsed header."""

    def __init__(self, path: Path):
        self.path = path
        with open(path, "rb") as fh:
            self.size = os.fstat(fh.fileno()).st_size
            if self.size == 0:
                raise ModelFileError(f"{path}: empty shard")
            self.mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)
        self.header, self.start = _header(self.mm, self.size, path)
        self.header.pop("__metadata__", None)

    def spec(self, name: str) -> tuple[torch.dtype, tuple[int, ...]]:
        info = self.header[name]
        if info.get("dtype") not in FLOAT_DTYPES:
            raise ModelFileError(f"{self.path}: tensor {name} has dtype {info.get('dtype')}; weights must be "
                                 f"floating point ({', '.join(FLOAT_DTYPES)})")
        return FLOAT_DTYPES[info["dtype"]], tuple(info["shape"])

    def tensor(self, name: str) -> torch.Tensor:
        """A view into the mapping (no copy: pages are read from disk when touched)."""
        with warnings.catch_warnings():  # a copy-on-write mapping is writable; torch need not warn
            warnings.simplefilter("ignore")
            return _tensor(self.mm, self.header, name, self.start, self.size, self.path, float_only=True)


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
            weight_map = json.loads(index.read_text())["weight_map"]
        elif (self.path / "model.safetensors").is_file():
            weight_map = None
        else:
            raise ModelFileError(f"{self.path}: no model.safetensors(.index.json): only safetensors checkpoints "
                                 "can be read lazily")
        files = sorted(set(weight_map.values())) if weight_map else ["model.safetensors"]
        self._shards = {f: _Shard(self.path / f) for f in files}
        if weight_map is None:
            weight_map = {n: "model.safetensors" for n in self._shards["model.safetensors"].header}
        missing = [n for n, f in weight_map.items() if n not in self._shards[f].header]
        if missing:
            raise ModelFileError(f"{self.path}: the index names tensors its shards do not hold: {missing[:5]}")
        self._where = dict(weight_map)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.block_rows = block_rows
        self.reads: dict[str, int] = {}  # tensor name -> times a view of it was handed out (tests, memory)
        self._identity = self._files_identity()
        self.cfg = self._convert(layer=None, rows=None).cfg  # everything meta: the config only
        self.cfg = self._fix_gpt2_cfg(self.cfg)
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

    def raw(self, name: str) -> torch.Tensor:
        """The checkpoint tensor `name`, memory-mapped in its stored dtype (a view, no copy)."""
        self.reads[name] = self.reads.get(name, 0) + 1
        return self._shards[self._where[name]].tensor(name)

    def _view(self, name: str) -> torch.Tensor:
        """The tensor `name` without counting a read (the converter's tie check: no data is read)."""
        return self._shards[self._where[name]].tensor(name)

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
                tie_check = _EMBED_KEYS.search(name)  # (a view: no data is read)
                sd[name] = self._view(name) if tie_check else self._meta(name)
            elif m:
                if int(m.group("l")) != (layer if layer is not None else 0):
                    continue
                key = f"{m.group('pre')}.0.{m.group('rest')}"
                real = layer is not None and (mlp or ".mlp." not in f".{m.group('rest')}")
                sd[key] = self.raw(name) if real else self._meta(name)
            elif _EMBED_KEYS.search(name):
                sd[name] = self.raw(name)[rows] if rows is not None else self._meta(name)
            else:  # final norm, positions: small
                sd[name] = self.raw(name) if (layer is not None or rows is not None) else self._meta(name)
        return sd

    def _convert(self, layer: int | None, rows: slice | torch.Tensor | None, mlp: bool = False):
        """`from_hf` on the sub-state-dict: a one-layer `Transformer` (meta where not asked for)."""
        from .convert import _hf_config_fields, from_hf

        sd = self._sub_state_dict(layer, rows, mlp)
        cfg = copy.deepcopy(self.hf_config)
        if isinstance(rows, torch.Tensor):
            n_vocab = len(rows)
        else:
            n_vocab = None if rows is None else len(range(*rows.indices(self._spec(self._embed_key())[1][0])))
        if cfg.model_type == "gpt2":
            f = _hf_config_fields(cfg)
            return from_hf(sd, n_heads=f["n_heads"], act_fn=f["act_fn"], ln_eps=f["ln_eps"], check=False)
        if layer is not None or rows is not None:
            cfg.num_hidden_layers = 1
            if getattr(cfg, "layer_types", None):
                cfg.layer_types = [cfg.layer_types[layer or 0]]
        if n_vocab is not None:
            cfg.vocab_size = n_vocab
        return from_hf(sd, config=cfg, check=False)

    def _fix_gpt2_cfg(self, cfg: ModelConfig) -> ModelConfig:
        if self.hf_config.model_type != "gpt2":
            return cfg
        from .convert import _hf_config_fields

        f = _hf_config_fields(self.hf_config)
        return ModelConfig.from_dict({**cfg.to_dict(), "attn_scale": f["attn_scale"],
                                      "bos_token_id": f["bos_token_id"], "name": f["name"]})

    def _folded(self, layer: int | None, rows: slice | None, dtype: torch.dtype,
                biases: bool = False) -> dict[str, torch.Tensor]:
        """Folded tensors of one layer (or of vocabulary rows); `biases=True` folds and creates the biases
        too, as `engine.prep` does (path expansion), else the weight matrices only (circuits)."""
        from .fold import fold_state_dict

        one = self._convert(layer, rows)
        # meta tensors (not asked for) are left out: the fold skips readers and writers it is not given
        params = {n: p.detach().to(dtype) for n, p in one.named_parameters() if not p.is_meta}
        cfg = one.cfg
        if "W_E" not in params:
            cfg = ModelConfig.from_dict({**cfg.to_dict(), "tied_embeddings": False})
        sd, _ = fold_state_dict(params, cfg, biases=biases)
        return sd

    def layer_weights(self, layer: int, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """Folded attention weights of one layer, cast to `dtype`: `W_Q [H, D, E]`, `W_O [H, E, D]`
        and `W_K`, `W_V` `[n_kv, D, E]` (shared by groups of query heads: head h reads
        `cfg.kv_head_of(h)`; not expanded)."""
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < self.cfg.n_layers:
            raise IndexError(f"layer={layer!r} is out of range: this model has layers 0..{self.cfg.n_layers - 1}")
        sd = self._folded(layer, None, dtype)
        kv = "_" if self.cfg.grouped_kv else ""
        return {"W_Q": sd["W_Q"][0], "W_K": sd[kv + "W_K"][0], "W_V": sd[kv + "W_V"][0], "W_O": sd["W_O"][0]}

    def layer_module(self, layer: int, rows: slice | torch.Tensor | None = None,
                     dtype: torch.dtype = torch.float32):
        """Layer `layer` whole (attention and MLP, unfolded: the forward pass's own weights) as a
        one-layer `Transformer` in `dtype`, its embedding / unembedding cut to `rows` (a slice or token
        ids; default the first row only). For the layer-by-layer forward pass (`LazySource`)."""
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < self.cfg.n_layers:
            raise IndexError(f"layer={layer!r} is out of range: this model has layers 0..{self.cfg.n_layers - 1}")
        m = self._convert(layer, slice(0, 1) if rows is None else rows, mlp=True).to(dtype)
        if self.hf_config.model_type == "gpt2":  # attention scale, BOS: the HF config's, as for `cfg`
            one = self._fix_gpt2_cfg(m.cfg)
            m.cfg = ModelConfig.from_dict({**one.to_dict(), "d_vocab": m.cfg.d_vocab, "bos_token_id": None})
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
        """Yield `(rows, W_E [b, D], W_U [D, b])` folded, one block of `block_rows` vocabulary rows at a time."""
        from tqdm.auto import tqdm

        V = self.cfg.d_vocab
        starts = range(0, V, self.block_rows)
        big = V * self.cfg.d_model > 5e7
        for s in tqdm(starts, desc=desc or "vocabulary pass", disable=not big or desc is None, leave=False):
            rows = slice(s, min(s + self.block_rows, V))
            sd = self._folded(None, rows, dtype)
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
        from .convert import _hf_config_fields, from_hf

        sd = {n: self.raw(n) for n in self._where}
        if self.hf_config.model_type == "gpt2":
            f = _hf_config_fields(self.hf_config)
            m = from_hf(sd, n_heads=f["n_heads"], act_fn=f["act_fn"], ln_eps=f["ln_eps"], dtype=dtype, check=False)
            m = _with_cfg(m, self.cfg)
        else:
            m = from_hf(sd, config=self.hf_config, dtype=dtype, check=False)
        m.tokenizer = self.tokenizer
        return m


def _with_cfg(model, cfg: ModelConfig):
    from .transformer import Transformer

    out = Transformer(cfg, seed=None)
    out.load_state_dict(model.state_dict())
    return out.to(model.W_E.dtype).eval()


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
