"""A decoder-only transformer in the project's one weight format.

Weights are stored stacked over layers and heads, in the row-vector convention (x @ W;
docs/ARCHITECTURE.md, Conventions), under TransformerLens' names:

    W_E [d_vocab, d_model]              W_pos [n_ctx, d_model]
    W_Q, W_K, W_V [layer, head, d_model, d_head]   b_Q, b_K, b_V [layer, head, d_head]
    W_O [layer, head, d_head, d_model]  b_O [layer, d_model]
    W_in [layer, d_model, d_mlp]  b_in [layer, d_mlp]  W_out [layer, d_mlp, d_model]  b_out [layer, d_model]
    ln1_w, ln1_b, ln2_w, ln2_b [layer, d_model]    ln_final_w, ln_final_b [d_model]
    W_U [d_model, d_vocab]              b_U [d_vocab]

Every intermediate passes through a named hook point (`blocks.{l}.attn.hook_pattern`, ...)
that can be cached (`run_with_cache`) or replaced (`run_with_hooks`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .hooks import ActivationCache, HookFn, HookPoint, get_act_name


def param_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every parameter a model with this config has."""
    L, H, D, E, V = cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_head, cfg.d_vocab
    s: dict[str, tuple[int, ...]] = {"W_E": (V, D)}
    if cfg.positional != "none":
        s["W_pos"] = (cfg.n_ctx, D)
    s.update(W_Q=(L, H, D, E), W_K=(L, H, D, E), W_V=(L, H, D, E), W_O=(L, H, E, D), W_U=(D, V))
    if cfg.biases:
        s.update(b_Q=(L, H, E), b_K=(L, H, E), b_V=(L, H, E), b_O=(L, D), b_U=(V,))
    if not cfg.attn_only:
        M = cfg.d_mlp
        s.update(W_in=(L, D, M), W_out=(L, M, D))
        if cfg.biases:
            s.update(b_in=(L, M), b_out=(L, D))
    if cfg.normalization == "LN":
        s.update(ln1_w=(L, D), ln1_b=(L, D), ln_final_w=(D,), ln_final_b=(D,))
        if not cfg.attn_only:
            s.update(ln2_w=(L, D), ln2_b=(L, D))
    return s


def _act(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "gelu_new":
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))
    if name == "gelu":
        return F.gelu(x)
    return F.relu(x)


def _unhooked(name: str, x: torch.Tensor) -> torch.Tensor:
    return x


class Transformer(nn.Module):
    """Decoder-only transformer (attention-only or GPT-2 style) with hooks and a cache.

    `model(tokens)` -> logits `[batch, pos, d_vocab]`; tokens are int ids `[batch, pos]` or `[pos]`.
    """

    def __init__(self, cfg: ModelConfig, seed: int | None = 0):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = None  # a circwidgets.model.tokenizer.Tokenizer, when the model has one
        for name, shape in param_shapes(cfg).items():
            self.register_parameter(name, nn.Parameter(torch.zeros(shape)))
        self._hooks: dict[str, list[HookFn]] = {}
        self._cache: ActivationCache | None = None
        self.init_weights(seed)

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def init_weights(self, seed: int | None = 0) -> None:
        """GPT-2 style init: N(0, 0.02); output projections scaled by 1/sqrt(2 n_layers); LN at 1, 0."""
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        std_out = 0.02 / math.sqrt(2 * max(self.cfg.n_layers, 1))
        for name, p in self.named_parameters():
            if name.startswith("ln") and name.endswith("_w"):
                p.fill_(1.0)
            elif name.startswith(("b_", "ln")):
                p.zero_()
            else:
                std = std_out if name in ("W_O", "W_out") else 0.02
                p.copy_(torch.randn(p.shape, generator=g) * std)

    # ------------------------------------------------------------------ hooks
    def _hook(self, name: str, x: torch.Tensor) -> torch.Tensor:
        for fn in self._hooks.get(name, ()):
            out = fn(x, HookPoint(name))
            if out is not None:
                if out.shape != x.shape:
                    raise ValueError(f"hook on {name} returned shape {tuple(out.shape)}, expected {tuple(x.shape)}")
                x = out
        if self._cache is not None:
            self._cache[name] = x
        return x

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[str | tuple, HookFn]] = ()) -> Iterator[Transformer]:
        """Context manager that installs forward hooks `(name, fn)`; `fn(activation, hook)` may
        return a replacement tensor of the same shape (or None to leave it)."""
        added = []
        try:
            for name, fn in fwd_hooks:
                full = get_act_name(*name) if isinstance(name, tuple) else name
                self._hooks.setdefault(full, []).append(fn)
                added.append((full, fn))
            yield self
        finally:
            for full, fn in added:
                self._hooks[full].remove(fn)
                if not self._hooks[full]:
                    del self._hooks[full]

    def run_with_hooks(self, tokens, fwd_hooks: Sequence[tuple[str | tuple, HookFn]] = ()) -> torch.Tensor:
        with self.hooks(fwd_hooks):
            return self(tokens)

    def run_with_cache(
        self, tokens, fwd_hooks: Sequence[tuple[str | tuple, HookFn]] = ()
    ) -> tuple[torch.Tensor, ActivationCache]:
        """Logits `[batch, pos, d_vocab]` and an `ActivationCache` of every hook point."""
        self._cache = ActivationCache()
        try:
            with self.hooks(fwd_hooks):
                logits = self(tokens)
            return logits, self._cache
        finally:
            self._cache = None

    # ------------------------------------------------------------------ forward
    def check_tokens(self, tokens) -> torch.Tensor:
        """Validate token ids and return them as a `[batch, pos]` long tensor on the model's device."""
        if isinstance(tokens, str):
            tokens = self.to_tokens(tokens)
        t = torch.as_tensor(tokens, device=self.W_E.device)
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise TypeError(f"tokens must be integer ids, got dtype {t.dtype}")
        if t.ndim == 1:
            t = t[None]
        if t.ndim != 2:
            raise ValueError(f"tokens must have shape [batch, pos] or [pos], got {tuple(t.shape)}")
        if t.shape[1] == 0:
            raise ValueError("tokens must contain at least one position")
        if t.shape[1] > self.cfg.n_ctx:
            raise ValueError(f"tokens has {t.shape[1]} positions; this model's n_ctx allows at most {self.cfg.n_ctx}")
        if t.numel() and (t.min() < 0 or t.max() >= self.cfg.d_vocab):
            raise ValueError(
                f"tokens contains ids outside [0, {self.cfg.d_vocab}) (min {int(t.min())}, max {int(t.max())})"
            )
        return t.long()

    def norm_params(self, site: str, layer: int | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Weight and bias `[d_model]` of the normalisation at `site` ("ln1" / "ln2" of `layer`, or
        "ln_final"); `(None, None)` when it has none (normalization None or weight-free)."""
        if site not in ("ln1", "ln2", "ln_final"):
            raise ValueError(f"site={site!r} must be 'ln1', 'ln2' or 'ln_final'")
        if site == "ln2" and self.cfg.attn_only:
            raise ValueError("an attention-only model has no ln2")
        # whatever weights this kind of normalisation has (LN: both; weight-free kinds: none)
        w, b = getattr(self, f"{site}_w", None), getattr(self, f"{site}_b", None)
        if site == "ln_final":
            return w, b
        return (None if w is None else w[layer]), (None if b is None else b[layer])

    def normalize(self, x: torch.Tensor, site: str, layer: int | None = None) -> torch.Tensor:
        """The normalisation at `site` ("ln1" / "ln2" of `layer`, or "ln_final") applied to a residual
        `x [..., d_model]`: the forward pass's own arithmetic, without firing hooks (for recomputing a
        layer's input from an edited residual stream). Identity when the model has no normalisation."""
        if site != "ln_final" and layer is None:
            raise ValueError(f"site={site!r} needs a layer")
        return self._norm(x, *self.norm_params(site, layer), where=None)

    def _norm(self, x: torch.Tensor, w: torch.Tensor | None, b: torch.Tensor | None, where: str | None) -> torch.Tensor:
        """Normalise `x`; `where` names the hook points (`{where}.hook_scale`, `.hook_normalized`),
        None runs without hooks."""
        if self.cfg.normalization is None:
            return x
        hook = self._hook if where is not None else _unhooked
        x = x - x.mean(-1, keepdim=True)
        scale = hook(f"{where}.hook_scale", (x.pow(2).mean(-1, keepdim=True) + self.cfg.ln_eps).sqrt())
        x = x / scale
        if w is not None:
            x = x * w
        if b is not None:
            x = x + b
        return hook(f"{where}.hook_normalized", x)

    def forward(self, tokens) -> torch.Tensor:
        cfg = self.cfg
        tokens = self.check_tokens(tokens)
        n_pos = tokens.shape[1]
        embed = self._hook("hook_embed", self.W_E[tokens])
        pos = None
        if cfg.positional != "none":
            pos = self._hook("hook_pos_embed", self.W_pos[:n_pos].expand_as(embed))
        resid = embed + pos if cfg.positional == "standard" else embed
        mask = torch.ones(n_pos, n_pos, dtype=torch.bool, device=tokens.device).tril()
        for layer in range(cfg.n_layers):
            blk = f"blocks.{layer}"
            resid = self._hook(f"{blk}.hook_resid_pre", resid)
            x = self._norm(resid, *self.norm_params("ln1", layer), f"{blk}.ln1")
            qk_in = x + pos if cfg.positional == "shortformer" else x
            B, P, H, E = qk_in.shape[0], n_pos, cfg.n_heads, cfg.d_head
            # one [B*P, D] @ [D, H*E] GEMM per projection (much faster than a per-head batched einsum)
            q = (qk_in @ self.W_Q[layer].permute(1, 0, 2).reshape(-1, H * E)).view(B, P, H, E)
            k = (qk_in @ self.W_K[layer].permute(1, 0, 2).reshape(-1, H * E)).view(B, P, H, E)
            v = (x @ self.W_V[layer].permute(1, 0, 2).reshape(-1, H * E)).view(B, P, H, E)
            if cfg.biases:
                q, k, v = q + self.b_Q[layer], k + self.b_K[layer], v + self.b_V[layer]
            q = self._hook(f"{blk}.attn.hook_q", q)
            k = self._hook(f"{blk}.attn.hook_k", k)
            v = self._hook(f"{blk}.attn.hook_v", v)
            scores = (q.transpose(1, 2) / cfg.attn_scale) @ k.permute(0, 2, 3, 1)  # [B, H, query, key]
            scores = self._hook(f"{blk}.attn.hook_attn_scores", scores.masked_fill_(~mask, float("-inf")))
            pattern = self._hook(f"{blk}.attn.hook_pattern", scores.softmax(-1))
            z = self._hook(f"{blk}.attn.hook_z", (pattern @ v.transpose(1, 2)).transpose(1, 2))  # [B, P, H, E]
            if self._cache is not None or f"{blk}.attn.hook_result" in self._hooks:
                # per-head writes [B, P, H, D], only when someone looks at them
                result = torch.einsum("bqhe,hed->bqhd", z, self.W_O[layer])
                attn_out = self._hook(f"{blk}.attn.hook_result", result).sum(2)
            else:
                attn_out = z.reshape(B, P, H * E) @ self.W_O[layer].reshape(H * E, -1)
            attn_out = attn_out + (self.b_O[layer] if cfg.biases else 0.0)
            attn_out = self._hook(f"{blk}.hook_attn_out", attn_out)
            if cfg.attn_only:
                resid = resid + attn_out
            else:
                resid = self._hook(f"{blk}.hook_resid_mid", resid + attn_out)
                x = self._norm(resid, *self.norm_params("ln2", layer), f"{blk}.ln2")
                pre = x @ self.W_in[layer] + (self.b_in[layer] if cfg.biases else 0.0)
                pre = self._hook(f"{blk}.mlp.hook_pre", pre)
                post = self._hook(f"{blk}.mlp.hook_post", _act(cfg.act_fn, pre))
                mlp_out = post @ self.W_out[layer] + (self.b_out[layer] if cfg.biases else 0.0)
                resid = resid + self._hook(f"{blk}.hook_mlp_out", mlp_out)
            resid = self._hook(f"{blk}.hook_resid_post", resid)
        x = self._norm(resid, *self.norm_params("ln_final"), "ln_final")
        logits = x @ self.W_U
        return logits + self.b_U if cfg.biases else logits

    # ------------------------------------------------------------------ tokenizer glue
    def _need_tokenizer(self):
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer: pass token ids instead of text")
        return self.tokenizer

    def to_tokens(self, text: str, prepend_bos: bool = True) -> torch.Tensor:
        """Token ids `[1, pos]` of `text` (BOS first when the model has one and `prepend_bos`)."""
        ids = self._need_tokenizer().encode(text)
        if prepend_bos and self.cfg.bos_token_id is not None:
            ids = [self.cfg.bos_token_id] + ids
        return torch.tensor([ids], dtype=torch.long, device=self.W_E.device)

    def to_str_tokens(self, tokens, prepend_bos: bool = True) -> list[str]:
        """One string per token, from text or from ids `[pos]` / `[1, pos]`."""
        if isinstance(tokens, str):
            tokens = self.to_tokens(tokens, prepend_bos=prepend_bos)
        ids = torch.as_tensor(tokens).reshape(-1).tolist()
        return self._need_tokenizer().id_to_str(ids)

    def to_string(self, tokens) -> str:
        return self._need_tokenizer().decode(torch.as_tensor(tokens).reshape(-1).tolist())

    def extra_repr(self) -> str:
        c = self.cfg
        return (
            f"n_layers={c.n_layers}, d_model={c.d_model}, n_heads={c.n_heads}, d_head={c.d_head}, "
            f"d_vocab={c.d_vocab}, n_ctx={c.n_ctx}, attn_only={c.attn_only}, normalization={c.normalization}, "
            f"positional={c.positional}"
        )
