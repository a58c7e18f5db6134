"""Argument checks shared by the engine: every bad input names the argument and its allowed range."""

from __future__ import annotations

import contextlib
import functools
import inspect
import operator
import weakref
from collections.abc import Callable
from typing import Any

import torch

from ..model import Transformer


def as_index(x) -> int | None:
    """`x` as a Python int when it is an integer scalar (int, NumPy integer, 0-d integer tensor), else None
    (bools, floats, strings, anything else: an index is never meant by those)."""
    if isinstance(x, bool) or isinstance(x, float) or (isinstance(x, torch.Tensor) and x.dtype == torch.bool):
        return None
    try:
        return operator.index(x)
    except TypeError:
        return None


def _index(x, n_lo: int, n_hi: int, name: str, what: str) -> int:
    """`x` as an int in `n_lo..n_hi` (inclusive); `IndexError` naming `name` and the range otherwise."""
    i = as_index(x)
    if i is None:
        raise IndexError(f"{name}={x!r} is not an integer: {what} {max(n_lo, 0)}..{n_hi}")
    if not n_lo <= i <= n_hi:
        raise IndexError(f"{name}={x!r} is out of range: {what} {max(n_lo, 0)}..{n_hi}")
    return i


def check_layer(model: Transformer, layer: int, name: str = "layer") -> int:
    """`layer` as an index in 0..n_layers-1 (a negative one counts from the end; NumPy / 0-d tensor
    integers accepted); `IndexError` naming `name` and the range for anything else (bools, floats, out of range)."""
    n = model.cfg.n_layers
    return _index(layer, -n, n - 1, name, "this model has layers") % n


def check_head(model: Transformer, head: int, name: str = "head") -> int:
    """`head` as an index in 0..n_heads-1 (negative counts from the end); `IndexError` otherwise."""
    n = model.cfg.n_heads
    return _index(head, -n, n - 1, name, "this model has heads") % n


def check_layer_head(model: Transformer, layer: int, head: int) -> tuple[int, int]:
    """`(layer, head)` checked by `check_layer` and `check_head`."""
    return check_layer(model, layer), check_head(model, head)


def check_token(model: Transformer, token: int, name: str = "token") -> int:
    """A token id in 0..d_vocab-1 (no negative ids: they are never meant); `IndexError` otherwise."""
    return _index(token, 0, model.cfg.d_vocab - 1, name, "token ids are")


def check_position(pos: int, n_pos: int, name: str = "pos") -> int:
    """A position of a `n_pos`-token input in 0..n_pos-1 (negative counts from the end); `IndexError` otherwise."""
    return _index(pos, -n_pos, n_pos - 1, name, "these tokens have positions") % n_pos


def check_count(value: int, name: str, lo: int = 1) -> int:
    """An integer >= `lo` (a sample count, a block size); `ValueError` naming `name` otherwise."""
    i = as_index(value)
    if i is None or i < lo:
        raise ValueError(f"{name}={value!r} must be an integer >= {lo}")
    return i


_FINITE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> parameters' state when checked


def _param_state(model: Transformer) -> tuple:
    """Changes whenever a parameter is replaced or modified in place (as `prep.fingerprint`)."""
    return tuple((n, p.data_ptr(), p._version) for n, p in model.named_parameters())


def _finite(p: torch.Tensor) -> bool:
    """All entries finite, by one min/max reduction (no bool temporary the size of the weight)."""
    if p.numel() == 0:
        return True
    try:
        mn, mx = torch.aminmax(p.detach())
        return bool(torch.isfinite(mn) & torch.isfinite(mx))
    except RuntimeError:  # dtypes without aminmax on this device
        return bool(torch.isfinite(p.detach()).all())


def check_finite(model: Transformer) -> None:
    """Raise if any weight is NaN or infinite (a silent wrong number is worse than an error). A model
    whose parameters have not changed since it passed is not checked again (each view of a dashboard
    asks; GPT-2's 124M weights take a while)."""
    if type(model).__name__ == "LazyModel" or not hasattr(model, "named_parameters"):
        return  # read layer by layer, or an nnsight source: their streamed results are checked instead
    state = _param_state(model)
    try:
        if _FINITE.get(model) == state:
            return
    except TypeError:  # not weak-referenceable: checked every time
        pass
    for name, p in model.named_parameters():
        if not _finite(p):
            raise ValueError(f"model weight {name} contains NaN or inf values")
    with contextlib.suppress(TypeError):
        _FINITE[model] = state


# ----------------------------------------------------------------------------------- outputs
class NonFiniteResultError(ValueError):
    """An engine result that came out NaN or infinite although the weights are finite: an overflow
    (weights too large for the dtype's arithmetic). The message names where it first appears."""


_HINT = ("the weights are finite but their products overflow {dtype} (weights far larger than a trained "
         "model's, e.g. W_V x 1e30): rescale them, or analyse a float64 copy")
_PER_HEAD = {"q": 2, "k": 2, "v": 2, "rot_q": 2, "rot_k": 2, "z": 2, "result": 2,  # the head axis of each hook
             "attn_scores": 1, "pattern": 1}


def _bad(x: torch.Tensor, masked_scores: bool = False) -> torch.Tensor:
    """NaN or inf entries; attention scores are -inf above the diagonal by design, so there only
    NaN and +inf count."""
    if not x.dtype.is_floating_point and not x.dtype.is_complex:
        return torch.zeros_like(x, dtype=torch.bool)
    return (x.isnan() | (x == float("inf"))) if masked_scores else ~torch.isfinite(x)


def _all_finite(t: torch.Tensor) -> bool:
    """Fast path without a full-size temporary: min and max are finite iff every entry is (both
    propagate NaN)."""
    if t.numel() == 0 or not (t.is_floating_point() or t.is_complex()):
        return True
    if t.is_complex():
        return bool(torch.isfinite(t).all())
    try:
        mn, mx = torch.aminmax(t)
    except RuntimeError:  # dtypes without aminmax on this device
        return bool(torch.isfinite(t).all())
    return bool(torch.isfinite(mn) & torch.isfinite(mx))


def _hook_names(cfg) -> list[str]:
    """Every hook point a forward pass of `cfg`'s architecture runs, in forward order (rotary q/k,
    the gated MLP's linear half and the post-norms of Gemma-style blocks included)."""
    names = ["hook_embed", "hook_pos_embed"]
    for layer in range(cfg.n_layers):
        b = f"blocks.{layer}"
        names += [f"{b}.hook_resid_pre", f"{b}.ln1.hook_scale", f"{b}.ln1.hook_normalized"]
        names += [f"{b}.attn.hook_{n}" for n in ("q", "k", "v", "rot_q", "rot_k", "attn_scores", "pattern", "z")]
        names += [f"{b}.ln1_post.hook_scale", f"{b}.ln1_post.hook_normalized", f"{b}.hook_attn_out",
                  f"{b}.hook_resid_mid", f"{b}.ln2.hook_scale", f"{b}.ln2.hook_normalized",
                  f"{b}.mlp.hook_pre_linear", f"{b}.mlp.hook_pre", f"{b}.mlp.hook_post",
                  f"{b}.ln2_post.hook_scale", f"{b}.ln2_post.hook_normalized", f"{b}.hook_mlp_out",
                  f"{b}.hook_resid_post"]
    return names + ["ln_final.hook_scale", "ln_final.hook_normalized"]


@torch.no_grad()
def locate_nonfinite(model: Transformer, tokens: torch.Tensor) -> str | None:
    """Where a forward pass on `tokens` first produces NaN/inf (forward order), e.g. "layer 1, head 0
    (blocks.1.attn.hook_attn_scores)"; "the unembedding (logits)"; None if the whole run is finite.
    One extra forward pass with checking hooks (nothing is stored): only called on failure."""
    first: list[str] = []

    def watch(x: torch.Tensor, hp) -> None:
        if first:
            return
        short = hp.name.rsplit("hook_", 1)[-1]
        bad = _bad(x, masked_scores=short == "attn_scores")
        if not bool(bad.any()):
            return
        where = f"layer {hp.layer()}" if hp.layer() is not None else "the embedding" if "embed" in short else "ln_final"
        if short in _PER_HEAD:
            axis = _PER_HEAD[short]
            head = int(bad.movedim(axis, 0).flatten(1).any(1).nonzero()[0, 0])
            where += f", head {head}"
        first.append(f"{where} ({hp.name})")

    logits = model.run_with_hooks(tokens, [(n, watch) for n in _hook_names(model.cfg)])
    if first:
        return first[0]
    return "the unembedding (logits)" if bool(_bad(logits).any()) else None


def check_finite_output(name: str, value, axes: tuple[str, ...] = ("layer", "head"), valid=None,
                        model: Transformer | None = None, tokens: torch.Tensor | None = None):
    """Return `value` (a tensor or float) unchanged if it is finite where a number is expected; else
    raise `NonFiniteResultError` naming `name`, the first bad index over `axes` (the leading dims of
    `value`, e.g. `("layer", "head")`: row-major order = the earliest layer first), and, given the
    `model` and `tokens` of the forward pass it came from, the layer/head where the run first
    overflows (`locate_nonfinite`). `valid`: bool mask over the leading dims, False where NaN is a
    legitimate "no value" (composition below the diagonal, a score with no mask entries)."""
    t = torch.as_tensor(value)
    if _all_finite(t):
        return value
    n = len(axes)
    if n == 0:
        bad = _bad(t).any()
    elif t.ndim == n:
        bad = _bad(t)
    else:  # one leading slice at a time: no full-size temporary for big outputs (patterns)
        bad = torch.stack([_bad(t[i]).flatten(n - 1).any(-1) for i in range(t.shape[0])])
    if valid is not None:
        bad = bad & torch.as_tensor(valid, device=bad.device)
    if not bool(bad.any()):
        return value
    msg = f"{name} came out NaN/inf"
    if len(axes):
        idx = bad.nonzero()[0].tolist()
        msg += f" (first at {', '.join(f'{a} {i}' for a, i in zip(axes, idx))}; {int(bad.sum())} entries in all)"
    dtype = t.dtype if t.is_floating_point() else "float"
    if model is not None:
        dtype = model.W_E.dtype
        if tokens is not None:
            where = locate_nonfinite(model, tokens)
            msg += (f"; the forward pass first overflows at {where}" if where else
                    "; the model's own forward pass is finite: the intervention or metric overflows")
    raise NonFiniteResultError(f"{msg}: {_HINT.format(dtype=dtype)}")


def check_finite_terms(name: str, labels: list[str], terms, model: Transformer | None = None,
                       tokens: torch.Tensor | None = None) -> None:
    """`check_finite_output` for a list of tensors named by `labels` (e.g. path terms): names the
    first term that is not finite."""
    for label, term in zip(labels, terms):
        if not _all_finite(term):
            check_finite_output(f"{name}: term {label!r}", term, axes=(), model=model, tokens=tokens)


def finite_results(name: str, parts: Callable[[Any], dict[str, tuple[Any, tuple[str, ...]]]] | None = None,
                   axes: tuple[str, ...] = ("layer", "head"), tokens: str = "tokens"):
    """Decorator for an engine entry point `fn(model, <tokens>, ...)` computed by forward passes:
    its result goes through `check_finite_output`, with `model` and the argument named `tokens`
    (e.g. "corrupted" for patching) used to locate the first overflow. `parts(result)` gives
    `{label: (tensor or float, axes)}` for results that are not one tensor (an `Effect`, ...)."""

    def deco(fn):
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            out = fn(*args, **kwargs)
            checks = parts(out) if parts is not None else {"": (out, axes)}
            if all(_all_finite(torch.as_tensor(v)) for v, _ in checks.values()):
                return out
            bound = sig.bind(*args, **kwargs)
            model, toks = bound.arguments["model"], bound.arguments[tokens]
            toks = model.check_tokens(toks)
            for label, (v, ax) in checks.items():
                check_finite_output(f"{name}{': ' + label if label else ''}", v, axes=ax, model=model, tokens=toks)
            return out

        return wrapper

    return deco


def effect_parts(e) -> dict[str, tuple[Any, tuple[str, ...]]]:
    """`finite_results` parts of an `interventions.Effect`."""
    return {"clean metric": (e.clean, ()), "intervened metric": (e.intervened, ())}
