"""Adapting inputs for the widgets: models from other libraries, tokens or text, labels, and
numbers to compact bytes. Encoding only: every number itself comes from `circwidgets.engine`."""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import numpy as np
import torch

from ..model import Transformer

_converted: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def as_model(obj, tokenizer=None) -> Transformer:
    """A circwidgets `Transformer` for `obj`: itself, or converted (once, then cached) from a
    Hugging Face causal LM or a TransformerLens model by `circwidgets.model.convert`; a lazy checkpoint
    as it is; an nnsight `LanguageModel`: the model it wraps (`_nnsight_weights`)."""
    from ..model.lazy import is_lazy

    if is_lazy(obj):  # a checkpoint read layer by layer: the weight views stream over it
        return obj
    if isinstance(obj, Transformer):
        if tokenizer is not None and obj.tokenizer is None:
            from ..model import Tokenizer

            obj.tokenizer = Tokenizer.from_any(tokenizer)
        return obj
    try:
        hit = _converted.get(obj)
    except TypeError:  # not weak-referenceable
        hit = None
    if hit is not None:
        return hit
    mod = type(obj).__module__ or ""
    if mod.startswith(("transformer_lens", "transformers")):
        try:
            from ..model import convert
        except ImportError as e:  # pragma: no cover - depends on the converters being present
            raise TypeError(f"cannot convert a {type(obj).__name__}: circwidgets.model.convert is missing ({e})") from e
        if mod.startswith("transformer_lens"):
            model = convert.from_transformer_lens(obj)
        else:
            model = convert.from_hf(obj, tokenizer=tokenizer) if tokenizer is not None else convert.from_hf(obj)
    elif mod.startswith("nnsight"):
        model = _nnsight_weights(obj)
    else:
        raise TypeError(
            f"expected a circwidgets Transformer, a Hugging Face causal LM (cw.from_hf families) or a TransformerLens "
            f"model, got {type(obj).__module__}.{type(obj).__name__}"
        )
    if tokenizer is not None and getattr(model, "tokenizer", None) is None:
        from ..model import Tokenizer

        model.tokenizer = Tokenizer.from_any(tokenizer)
    try:
        _converted[obj] = model
    except TypeError:
        pass
    return model


def _nnsight_weights(lm):
    """The model an nnsight `LanguageModel` wraps, for the views that read weights and run it with hooks
    (`engine.model_weights`: its local checkpoint read lazily, else the module converted; weights that
    are not here are refused with what to do), with the wrapper's tokenizer."""
    from ..engine import model_weights

    model = model_weights(lm)
    tok = getattr(lm, "tokenizer", None)
    if tok is not None and getattr(model, "tokenizer", None) is None:
        from ..model import Tokenizer

        model.tokenizer = Tokenizer.from_any(tok)
    return model


def tokens_and_labels(model: Transformer, text_or_tokens,
                      labels: Sequence[str] | None = None) -> tuple[torch.Tensor, list[str]]:
    """Token ids `[pos]` and one label per position.

    `text_or_tokens`: a string (needs a tokenizer; BOS prepended when the model has one), or ids
    `[pos]` / `[1, pos]` (list, numpy or torch). `labels`: explicit strings, one per position.
    Raises ValueError / TypeError naming the problem (too long for n_ctx, ids outside the vocabulary,
    wrong number of labels).
    """
    toks = model.check_tokens(text_or_tokens)
    if toks.shape[0] != 1:
        raise ValueError(f"pass one sequence, got a batch of {toks.shape[0]}")
    toks = toks[0]
    if labels is not None:
        labels = [str(s) for s in labels]
        if len(labels) != toks.shape[0]:
            raise ValueError(f"labels has {len(labels)} strings but there are {toks.shape[0]} token positions")
    elif model.tokenizer is not None:
        labels = model.tokenizer.id_to_str(toks.tolist())
    else:
        labels = [str(t) for t in toks.tolist()]
    return toks, labels


def token_label(model: Transformer, token: int) -> str:
    """The text of one token id (its id as a string when the model has no tokenizer)."""
    if model.tokenizer is not None:
        return model.tokenizer.id_to_str([int(token)])[0]
    return str(int(token))


def find_token(model: Transformer, query: str) -> int:
    """Token id for a search string: an exact token string, a string that encodes to one token, or
    `#123` / `123` (an id). Raises LookupError with a readable message otherwise."""
    q = query
    tok = model.tokenizer
    if tok is not None:
        tid = tok.token_to_id(q)
        if tid is not None and 0 <= tid < model.cfg.d_vocab:
            return int(tid)
        # a token whose decoded text is the query (byte-level BPE stores " x" as "Ġx"); the check of
        # the decoded text keeps an unknown word from matching the tokenizer's unk token
        for cand in (q, " " + q.lstrip()):
            ids = tok.encode(cand) if cand.strip() else []
            if len(ids) == 1 and 0 <= ids[0] < model.cfg.d_vocab and tok.id_to_str(ids)[0].strip() == q.strip():
                return int(ids[0])
    s = q.strip().lstrip("#")
    if s.isdigit():
        t = int(s)
        if 0 <= t < model.cfg.d_vocab:
            return t
        raise LookupError(f"token id {t} is out of range: token ids are 0..{model.cfg.d_vocab - 1}")
    if tok is None:
        raise LookupError(f"this model has no tokenizer: search by token id (0..{model.cfg.d_vocab - 1})")
    raise LookupError(f"{query!r} is not a single token of this model's vocabulary")


_TRIL: dict[int, np.ndarray] = {}


def _tril_index(n: int) -> np.ndarray:
    """Flat indices of the lower triangle (diagonal included) of an n x n matrix, row by row."""
    if n not in _TRIL:
        i, j = np.tril_indices(n)
        _TRIL[n] = (i * n + j).astype(np.int64)
        if len(_TRIL) > 8:
            _TRIL.pop(next(iter(_TRIL)))
    return _TRIL[n]


def encode_array(x, dtype: str = "float16", layout: str = "dense") -> dict:
    """Pack an array for a bytes trait: `{"dtype", "shape", "layout", "data", "lo", "hi"}`.

    float16 goes as its little-endian bit patterns (decoded in JS through a table); uint8 is
    quantised linearly between the array's finite min and max (`lo`, `hi`); float32 and int32 as is.
    layout "tril": a square matrix that is zero above the diagonal (a causal attention pattern) sends
    only its lower triangle, row by row (n(n+1)/2 values: half the bytes).
    """
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    shape = list(a.shape)
    if layout == "tril":
        if a.ndim != 2 or a.shape[0] != a.shape[1]:
            raise ValueError(f"layout 'tril' needs a square matrix, got shape {shape}")
        a = a.reshape(-1)[_tril_index(a.shape[0])]
    elif layout != "dense":
        raise ValueError(f"unknown layout {layout!r}")
    lo = hi = 0.0
    if dtype == "float16":
        data = np.ascontiguousarray(a, dtype="<f2").tobytes()
    elif dtype == "float32":
        data = np.ascontiguousarray(a, dtype="<f4").tobytes()
    elif dtype == "int32":
        data = np.ascontiguousarray(a, dtype="<i4").tobytes()
    elif dtype == "uint8":
        af = a.astype(np.float64)
        fin = af[np.isfinite(af)]
        lo, hi = (float(fin.min()), float(fin.max())) if fin.size else (0.0, 1.0)
        span = hi - lo or 1.0
        q = np.clip(np.rint((np.nan_to_num(af, nan=lo) - lo) / span * 255), 0, 255)
        data = q.astype(np.uint8).tobytes()
    else:
        raise ValueError(f"unknown dtype {dtype!r}")
    return {"dtype": dtype, "shape": shape, "layout": layout, "data": data, "lo": lo, "hi": hi}


def decode_array(p: dict) -> np.ndarray:
    """Inverse of `encode_array` (float32 result); used by tests and the static twins."""
    dt = p["dtype"]
    if dt == "float16":
        a = np.frombuffer(p["data"], dtype="<f2").astype(np.float32)
    elif dt == "float32":
        a = np.frombuffer(p["data"], dtype="<f4").astype(np.float32)
    elif dt == "int32":
        a = np.frombuffer(p["data"], dtype="<i4")
    elif dt == "uint8":
        q = np.frombuffer(p["data"], dtype=np.uint8).astype(np.float64)
        a = (p["lo"] + q / 255 * (p["hi"] - p["lo"])).astype(np.float32)
    else:
        raise ValueError(f"unknown dtype {dt!r}")
    if p.get("layout", "dense") == "tril":
        n = p["shape"][0]
        full = np.zeros(n * n, dtype=a.dtype)
        full[_tril_index(n)] = a
        return full.reshape(n, n)
    return a.reshape(p["shape"])
