"""A decoder-only transformer in the project's one weight format.

Weights are stored stacked over layers and heads, in the row-vector convention (x @ W;
docs/ARCHITECTURE.md, Conventions), under TransformerLens' names:

    W_E [d_vocab, d_model]              W_pos [n_ctx, d_model]
    W_Q, W_K, W_V [layer, head, d_model, d_head]   b_Q, b_K, b_V [layer, head, d_head]
    W_O [layer, head, d_head, d_model]  b_O [layer, d_model]
    W_in [layer, d_model, d_mlp]  b_in [layer, d_mlp]  W_out [layer, d_mlp, d_model]  b_out [layer, d_model]
    ln1_w, ln1_b, ln2_w, ln2_b [layer, d_model]    ln_final_w, ln_final_b [d_model]
    W_U [d_model, d_vocab]              b_U [d_vocab]

and, for the architectures beyond GPT-2 (see `ModelConfig`): W_gate [layer, d_model, d_mlp]
(b_gate), ln1_post_w / ln2_post_w [layer, d_model], q_norm_w / k_norm_w, no W_pos with rotary
positions (`rotary.py`). Grouped-query K/V heads are stored once, `_W_K`, `_W_V` [layer, n_kv_heads,
d_model, d_head] (`_b_K`, `_b_V`), and `model.W_K` etc. give them per query head (`kv_expand`); a tied
unembedding has no parameter of its own, `model.W_U` is the view `W_E.T`.

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

from . import rotary
from .config import ModelConfig
from .hooks import ActivationCache, HookFn, HookPoint, get_act_name


def param_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every parameter a model with this config has (what `state_dict` holds:
    shared K/V heads once as `_W_K`/`_W_V`, no `W_U` when tied to `W_E`)."""
    L, H, D, E, V = cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_head, cfg.d_vocab
    K = cfg.n_kv
    kv = "_" if cfg.grouped_kv else ""
    s: dict[str, tuple[int, ...]] = {"W_E": (V, D)}
    if cfg.positional in ("standard", "shortformer"):
        s["W_pos"] = (cfg.n_ctx, D)
    s.update({"W_Q": (L, H, D, E), f"{kv}W_K": (L, K, D, E), f"{kv}W_V": (L, K, D, E), "W_O": (L, H, E, D)})
    if not cfg.tied_embeddings:
        s["W_U"] = (D, V)
    if cfg.biases:
        s.update({"b_Q": (L, H, E), f"{kv}b_K": (L, K, E), f"{kv}b_V": (L, K, E), "b_O": (L, D), "b_U": (V,)})
    if not cfg.attn_only:
        M = cfg.d_mlp
        s.update(W_in=(L, D, M), W_out=(L, M, D))
        if cfg.gated_mlp:
            s["W_gate"] = (L, D, M)
        if cfg.biases:
            s.update(b_in=(L, M), b_out=(L, D))
            if cfg.gated_mlp:
                s["b_gate"] = (L, M)
    norms = (["ln1"] + ([] if cfg.attn_only else ["ln2"])) if cfg.pre_norm else []
    if cfg.normalization in ("LN", "RMS"):
        for n in norms + ["ln_final"]:
            s[f"{n}_w"] = (L, D) if n != "ln_final" else (D,)
            if cfg.normalization == "LN":
                s[f"{n}_b"] = (L, D) if n != "ln_final" else (D,)
    if cfg.post_norm:  # post-norm weights stay in place when pre-norms are folded
        for n in ["ln1_post"] + ([] if cfg.attn_only else ["ln2_post"]):
            s[f"{n}_w"] = (L, D)
            if cfg.normalization in ("LN", "LNPre"):
                s[f"{n}_b"] = (L, D)
    if cfg.qk_norm:
        per_head = cfg.qk_norm_scope == "head"
        s["q_norm_w"] = (L, E) if per_head else (L, H, E)
        s["k_norm_w"] = (L, E) if per_head else (L, K, E)
    return s


def is_norm_weight(name: str) -> bool:
    """Whether parameter `name` is a normalisation weight (initialised at 1)."""
    return name.endswith("_w") and (name.startswith("ln") or name.endswith("norm_w"))


_KV_VIEWS = ("W_K", "W_V", "b_K", "b_V")


def _act(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "gelu_new":
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))
    if name == "gelu":
        return F.gelu(x)
    if name == "gelu_pytorch_tanh":
        return F.gelu(x, approximate="tanh")
    if name == "silu":
        return F.silu(x)
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
            if is_norm_weight(name):
                p.fill_(1.0)
            elif name.startswith(("b_", "_b_", "ln")):
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
        try:
            t = torch.as_tensor(tokens, device=self.W_E.device)
        except (OverflowError, RuntimeError, TypeError, ValueError) as e:  # e.g. an id of 2**70, ragged lists
            raise ValueError(f"tokens must be integer ids in [0, {self.cfg.d_vocab}) in a [batch, pos] or [pos] "
                             f"array; these could not be read as one ({e})") from None
        if t.numel() == 0:
            raise ValueError("tokens is empty: pass at least one token id")
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise TypeError(f"tokens must be integer ids, got dtype {t.dtype}")
        if t.dtype in (torch.uint16, torch.uint32, torch.uint64):  # few ops exist for these: widen (exact < 2**63)
            wide = t.to(torch.int64)
            if t.dtype == torch.uint64 and bool((wide < 0).any()):
                raise ValueError(f"tokens contains ids >= 2**63, outside [0, {self.cfg.d_vocab})")
            t = wide
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

    def normalize(self, x: torch.Tensor, site: str, layer: int | None = None) -> torch.Tensor:
        """The normalisation at `site` ("ln1" / "ln2" of `layer`, or "ln_final") applied to a residual
        `x [..., d_model]`: the forward pass's own arithmetic, without firing hooks (for recomputing a
        layer's input from an edited residual stream). Identity when the model has no normalisation
        there (no normalisation, or a post-norm-only block)."""
        if site not in ("ln1", "ln2", "ln_final"):
            raise ValueError(f"site={site!r} must be 'ln1', 'ln2' or 'ln_final'")
        if site == "ln2" and self.cfg.attn_only:
            raise ValueError("an attention-only model has no ln2")
        if site == "ln_final":
            return self._norm(x, "ln_final", where=None)
        if layer is None:
            raise ValueError(f"site={site!r} needs a layer")
        return self._norm(x, f"{site}[{layer}]", where=None) if self.cfg.pre_norm else x

    def _norm(self, x: torch.Tensor, name: str | None, where: str | None) -> torch.Tensor:
        """LayerNorm ("LN"/"LNPre": centre, divide by the scale) or RMSNorm ("RMS"/"RMSPre": divide by
        the root mean square), then the weight (and LN bias) `{name}_w` of the given layer if it exists.
        `name` is e.g. "ln1[3]" -> parameter ln1_w, row 3; None for no weight. `where` names the hook
        points (`{where}.hook_scale`, `.hook_normalized`); None runs without hooks."""
        kind = self.cfg.normalization
        if kind is None:
            return x
        hook = self._hook if where is not None else _unhooked
        if kind in ("LN", "LNPre"):
            x = x - x.mean(-1, keepdim=True)
        scale = hook(f"{where}.hook_scale", (x.pow(2).mean(-1, keepdim=True) + self.cfg.ln_eps).sqrt())
        x = x / scale
        if name is not None:
            base, layer = name, None
            if "[" in name:
                base, layer = name[:-1].split("[")
                layer = int(layer)
            w = self._parameters.get(f"{base}_w")
            b = self._parameters.get(f"{base}_b")
            if w is not None:
                x = x * (w if layer is None else w[layer])
            if b is not None:
                x = x + (b if layer is None else b[layer])
        return hook(f"{where}.hook_normalized", x)

    def project(self, x: torch.Tensor, layer: int, which: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Layer `layer`'s queries, keys or values (`which` = "q", "k", "v") `[batch, pos, heads, d_head]` (any
        leading shape) from its input `x [batch, pos, d_model]` (normalised, and for q / k with shortformer
        positions added), as the forward pass computes them: the projection, its bias, then the q / k norm.
        Keys and values are per stored head: `n_kv_heads` of them under grouped-query attention, before they
        are shared. `dtype`: compute with the weights detached and cast to it (an analysis in float64).
        The forward pass, every recomputation of a path cut (engine ablation hooks, lazy models) and the
        engine's offset profiles call this one."""
        cfg = self.cfg
        w = (lambda t: t) if dtype is None else (lambda t: t.detach().to(dtype))
        stored = "_" if cfg.grouped_kv and which != "q" else ""
        W = w(getattr(self, f"{stored}W_{which.upper()}")[layer])  # [heads, d_model, d_head]
        n, E = W.shape[0], W.shape[2]
        # one [B*P, D] @ [D, heads*E] GEMM (much faster than a per-head batched einsum)
        out = (x @ W.permute(1, 0, 2).reshape(-1, n * E)).view(*x.shape[:-1], n, E)
        if cfg.biases:
            out = out + w(getattr(self, f"{stored}b_{which.upper()}")[layer])
        if cfg.qk_norm and which != "v":
            out = self._qk_norm(out, w((self.q_norm_w if which == "q" else self.k_norm_w)[layer]))
        return out

    def project_from_stream(self, resid: torch.Tensor, layer: int, which: str) -> torch.Tensor:
        """`project` of the residual stream `resid [batch, pos, d_model]` entering `layer`: through its ln1
        (`normalize`) and, for q / k, with shortformer positions added, as the forward pass does (without
        firing hooks). Path cuts recompute a head's input with this from an edited stream."""
        x = self.normalize(resid, "ln1", layer)
        if which != "v" and self.cfg.positional == "shortformer":
            x = x + self.W_pos[: x.shape[1]]
        return self.project(x, layer, which)

    def attn_write_factor(self, result: torch.Tensor, layer: int) -> torch.Tensor | None:
        """What multiplies each head's `result` `[batch, pos, heads, d_model]` (`hook_result`) on its way into
        the residual stream: None without a post-norm; through an RMS post-norm (Gemma 2/3, OLMo-2)
        `w / rms(Σ_h result_h + b_O)` `[batch, pos, d_model]`, the block's scale frozen, so that the heads'
        scaled writes and the bias's add up to the block's output. Path cuts remove a head's write this way.
        A LayerNorm post-norm centres its input and has no such split: refused."""
        cfg = self.cfg
        if not cfg.post_norm:
            return None
        if cfg.normalization not in ("RMS", "RMSPre"):
            raise NotImplementedError("a head's write through a LayerNorm post-norm is not a fixed multiple of "
                                      "its output: path cuts support RMSNorm post-norms only")
        total = result.sum(-2) + (self.b_O[layer] if cfg.biases else 0.0)
        scale = (total.pow(2).mean(-1, keepdim=True) + cfg.ln_eps).sqrt()
        w = self._parameters.get("ln1_post_w")
        return 1.0 / scale if w is None else w[layer] / scale

    def _qk_norm(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """RMS-normalise q or k `[B, P, heads, E]` per head (weight `[E]`) or over all heads (`[heads, E]`)."""
        dims = (-1,) if self.cfg.qk_norm_scope == "head" else (-2, -1)
        return x / (x.pow(2).mean(dims, keepdim=True) + self.cfg.ln_eps).sqrt() * w

    def _masks(self, n_pos: int, device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Causal mask `[query, key]` and, with a sliding window, the windowed one (i - j < window)."""
        i = torch.arange(n_pos, device=device)
        causal = i[:, None] >= i[None, :]
        if self.cfg.sliding_window is None:
            return causal, None
        return causal, causal & (i[:, None] - i[None, :] < self.cfg.sliding_window)

    def forward(self, tokens) -> torch.Tensor:
        cfg = self.cfg
        tokens = self.check_tokens(tokens)
        n_pos = tokens.shape[1]
        embed = self.W_E[tokens]
        if cfg.embed_scale != 1.0:
            embed = embed * cfg.embed_scale
        embed = self._hook("hook_embed", embed)
        pos = None
        if cfg.positional in ("standard", "shortformer"):
            pos = self._hook("hook_pos_embed", self.W_pos[:n_pos].expand_as(embed))
        resid = embed + pos if cfg.positional == "standard" else embed
        causal, sliding = self._masks(n_pos, tokens.device)
        rot = {}  # (cos, sin) per distinct rotary base
        positions = torch.arange(n_pos, device=tokens.device)
        B, P, H, E = tokens.shape[0], n_pos, cfg.n_heads, cfg.d_head
        for layer in range(cfg.n_layers):
            blk = f"blocks.{layer}"
            resid = self._hook(f"{blk}.hook_resid_pre", resid)
            x = self._norm(resid, f"ln1[{layer}]", f"{blk}.ln1") if cfg.pre_norm else resid
            qk_in = x + pos if cfg.positional == "shortformer" else x
            q, k, v = self.project(qk_in, layer, "q"), self.project(qk_in, layer, "k"), self.project(x, layer, "v")
            if cfg.grouped_kv:  # per query head (HF repeat_kv order): hooks see [B, P, n_heads, E]
                g = cfg.kv_group_size
                k, v = k.repeat_interleave(g, dim=2), v.repeat_interleave(g, dim=2)
            q = self._hook(f"{blk}.attn.hook_q", q)
            k = self._hook(f"{blk}.attn.hook_k", k)
            v = self._hook(f"{blk}.attn.hook_v", v)
            if cfg.positional == "rotary":
                key = cfg.rotary_base_sliding is not None and cfg.is_sliding(layer)
                if key not in rot:
                    cos, sin = rotary.cos_sin(cfg, positions, layer, q.dtype)
                    rot[key] = (cos[:, None], sin[:, None])  # broadcast over heads of [B, P, H, E]
                cos, sin = rot[key]
                q = self._hook(f"{blk}.attn.hook_rot_q", rotary.rotate(q, cos, sin, cfg))
                k = self._hook(f"{blk}.attn.hook_rot_k", rotary.rotate(k, cos, sin, cfg))
            scores = (q.transpose(1, 2) / cfg.attn_scale) @ k.permute(0, 2, 3, 1)  # [B, H, query, key]
            if cfg.attn_softcap is not None:
                scores = cfg.attn_softcap * torch.tanh(scores / cfg.attn_softcap)
            mask = sliding if cfg.is_sliding(layer) else causal
            scores = self._hook(f"{blk}.attn.hook_attn_scores", scores.masked_fill(~mask, float("-inf")))
            pattern = self._hook(f"{blk}.attn.hook_pattern", scores.softmax(-1))
            z = self._hook(f"{blk}.attn.hook_z", (pattern @ v.transpose(1, 2)).transpose(1, 2))  # [B, P, H, E]
            if self._cache is not None or f"{blk}.attn.hook_result" in self._hooks:
                # per-head writes [B, P, H, D], only when someone looks at them
                result = torch.einsum("bqhe,hed->bqhd", z, self.W_O[layer])
                attn_out = self._hook(f"{blk}.attn.hook_result", result).sum(2)
            else:
                attn_out = z.reshape(B, P, H * E) @ self.W_O[layer].reshape(H * E, -1)
            attn_out = attn_out + (self.b_O[layer] if cfg.biases else 0.0)
            if cfg.post_norm:
                attn_out = self._norm(attn_out, f"ln1_post[{layer}]", f"{blk}.ln1_post")
            attn_out = self._hook(f"{blk}.hook_attn_out", attn_out)
            if cfg.attn_only:
                resid = resid + attn_out
            else:
                if cfg.parallel_attn_mlp:
                    mlp_in = resid
                else:
                    resid = mlp_in = self._hook(f"{blk}.hook_resid_mid", resid + attn_out)
                x = self._norm(mlp_in, f"ln2[{layer}]", f"{blk}.ln2") if cfg.pre_norm else mlp_in
                mlp_out = self._mlp(x, layer, blk)
                if cfg.post_norm:
                    mlp_out = self._norm(mlp_out, f"ln2_post[{layer}]", f"{blk}.ln2_post")
                mlp_out = self._hook(f"{blk}.hook_mlp_out", mlp_out)
                resid = resid + attn_out + mlp_out if cfg.parallel_attn_mlp else resid + mlp_out
            resid = self._hook(f"{blk}.hook_resid_post", resid)
        return self.unembed(self._norm(resid, "ln_final", "ln_final"))

    def unembed(self, x: torch.Tensor) -> torch.Tensor:
        """Logits `[..., d_vocab]` from the final normalised residual `x [..., d_model]` (what
        `ln_final.hook_normalized` holds; the last `hook_resid_post` without normalisation)."""
        logits = x @ self.W_U
        if self.cfg.biases:
            logits = logits + self.b_U
        if self.cfg.final_softcap is not None:
            logits = self.cfg.final_softcap * torch.tanh(logits / self.cfg.final_softcap)
        return logits

    def _mlp(self, x: torch.Tensor, layer: int, blk: str) -> torch.Tensor:
        """`act(x W_in + b_in) W_out + b_out`, or gated: `(act(x W_gate + b_gate) * (x W_in + b_in)) W_out + b_out`
        (hook_pre is the activation's input, as in TransformerLens; hook_pre_linear the gated linear part)."""
        cfg = self.cfg
        pre = x @ self.W_in[layer] + (self.b_in[layer] if cfg.biases else 0.0)
        if cfg.gated_mlp:
            linear = self._hook(f"{blk}.mlp.hook_pre_linear", pre)
            pre = x @ self.W_gate[layer] + (self.b_gate[layer] if cfg.biases else 0.0)
            pre = self._hook(f"{blk}.mlp.hook_pre", pre)
            post = self._hook(f"{blk}.mlp.hook_post", _act(cfg.act_fn, pre) * linear)
        else:
            pre = self._hook(f"{blk}.mlp.hook_pre", pre)
            post = self._hook(f"{blk}.mlp.hook_post", _act(cfg.act_fn, pre))
        return post @ self.W_out[layer] + (self.b_out[layer] if cfg.biases else 0.0)

    # ------------------------------------------------------------------ shared K/V, tied unembedding
    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            params = self.__dict__.get("_parameters", {})
            if name in _KV_VIEWS and "_" + name in params:
                return self.kv_expand(params["_" + name])
            if name == "W_U" and "W_E" in params and self.cfg.tied_embeddings:
                return params["W_E"].T
            raise

    def kv_expand(self, shared: torch.Tensor) -> torch.Tensor:
        """Shared K/V weights `[layer, n_kv_heads, ...]` -> per query head `[layer, n_heads, ...]`,
        query head h reading K/V head `cfg.kv_head_of(h)`.

        For multi-query attention (1 K/V head) this is a zero-copy `expand`. Otherwise a strided
        view cannot repeat each head g times in place, so this is a copy (differentiable, never
        stored: `model.W_K[l, h] = ...` writes to a temporary; edit `_W_K` instead, which changes
        the whole group). `kv_grouped` gives the zero-copy 5-d view.
        """
        if shared.shape[1] == 1:
            return shared.expand(shared.shape[0], self.cfg.n_heads, *shared.shape[2:])
        return self.kv_grouped(shared).flatten(1, 2)

    def kv_grouped(self, shared: torch.Tensor) -> torch.Tensor:
        """Zero-copy view `[layer, n_kv_heads, group, ...]` of shared K/V weights `[layer, n_kv_heads, ...]`:
        `[l, k, i]` is the weight query head `k * group + i` reads (shares storage with `shared`)."""
        L, K = shared.shape[:2]
        return shared.unsqueeze(2).expand(L, K, self.cfg.kv_group_size, *shared.shape[2:])

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
            f"positional={c.positional}" + (f", n_kv_heads={c.n_kv_heads}" if c.grouped_kv else "")
        )


def from_tensors(cfg: ModelConfig, tensors: dict[str, torch.Tensor]) -> Transformer:
    """A `Transformer` whose parameters ARE `tensors` (assigned, not copied: names and shapes must be
    `param_shapes(cfg)`'s). Built on the meta device: no random init of weights about to be replaced,
    no memory for them, and the global RNG is left as it was."""
    with torch.device("meta"):
        model = Transformer(cfg, seed=None)
    if next(model.buffers(), None) is not None:  # buffers would stay on meta: build for real
        with torch.random.fork_rng(devices=[]):
            model = Transformer(cfg, seed=None)
    model.load_state_dict(tensors, strict=True, assign=True)
    return model.eval()
