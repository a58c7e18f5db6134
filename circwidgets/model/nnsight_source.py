"""Activations from an nnsight `LanguageModel` (or a Hugging Face model, `device_map="auto"` included):
the "activation source" the engine's activation functions use when not given our own `Transformer`.

The interface (`ActivationSource`) is what the engine needs and nothing more, so that a remote run
(`remote=True`: NDIF, or any nnsight server) ships only what the selected head needs:

- `cfg`, `tokenizer`, `check_tokens(tokens)`;
- `patterns(tokens, layers)`: `{layer: [batch, head, query, key]}` of the given layers only;
- `run(tokens, edits, metric)`: the metric's value (computed inside the trace, next to the model)
  of a forward pass in which `edits[layer](z)` replaces that layer's per-head attention output
  `z [batch, pos, head, d_head]` (the input of the output projection: its columns `h*d_head..` are
  head h), and the clean `z` of the layers in `save_z` (for patching);
- `head_logit_attribution(tokens, pos, direction)`: each head's direct contribution to the logit
  direction at `pos` (final norm scale frozen), computed inside the trace: `[batch, layer, head]`;
- for path cuts (`engine.ablate_path`): `run_cuts(tokens, groups, metric, res_mean)`, the metric
  of a run in which later heads' queries / keys / values are recomputed from the residual stream
  minus earlier heads' writes, inside the trace, and `reference_means(reference, z_layers, write_heads)`;
  `run_state(...)` the same with head edits and residual replacements, any function of the logits;
- `head_writes(tokens, heads)`: heads' writes `[batch, pos, d_model]` (the views' default position),
  `centred_unembedding(ids)`: unembedding columns minus their mean over the vocabulary.

For path expansion, `frozen_activations(tokens)`: one trace that sends back each layer's pattern, its
first norm's and (RMS post-norm families: Gemma 2/3, OLMo-2) attention post-norm's scales (computed in
the trace) and MLP output, and the final norm's input.

`model.lazy_source.LazySource` implements the same interface for a lazy checkpoint (the forward
pass one layer at a time).

Our `Transformer` implements the same operations with hooks (`TransformerSource`). Every trace body
lives in this file (nnsight compiles `with` blocks from their source file).

Attention patterns need eager attention (SDPA / flash kernels compute no pattern): a model on
another implementation is refused with the switch to make (`attn_implementation="eager"`), never
answered with zeros.
"""

from __future__ import annotations

import functools
from typing import Any, Protocol

import torch

from .config import ModelConfig

__all__ = ["CUT_FAMILIES", "EXPANSION_FAMILIES", "ActivationSource", "EagerAttentionRequired", "NNsightSource",
           "TransformerSource", "as_source", "is_source"]


class EagerAttentionRequired(ValueError):
    """Attention patterns were asked of a model running SDPA / flash attention."""


class ActivationSource(Protocol):
    cfg: ModelConfig
    tokenizer: Any

    def check_tokens(self, tokens) -> torch.Tensor: ...

    def patterns(self, tokens: torch.Tensor, layers: list[int]) -> dict[int, torch.Tensor]: ...

    def patterns_and_value_norms(self, tokens: torch.Tensor, layers: list[int]
                                 ) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]: ...

    def run(self, tokens: torch.Tensor, edits: dict | None = None, metric=None,
            save_z: tuple[int, ...] = ()) -> tuple[float | None, dict[int, torch.Tensor]]: ...


# module paths per family: (layers, attention, output projection, final norm, unembedding, o-proj is Conv1D)
_PATHS = {
    "gpt2": ("transformer.h", "attn", "c_proj", "transformer.ln_f", "lm_head", True),
    "gpt_neox": ("gpt_neox.layers", "attention", "dense", "gpt_neox.final_layer_norm", "embed_out", False),
}
_DEFAULT_PATH = ("model.layers", "self_attn", "o_proj", "model.norm", "lm_head", False)
# families whose q/k/v inputs path cuts recompute inside the trace (`NNsightSource._cut_sites`: each family's
# first norm and projection layout) and whose path expansion reads its frozen activations in one trace
CUT_FAMILIES = ("gpt2", "gpt_neox", "llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "olmo2", "phi3")
EXPANSION_FAMILIES = CUT_FAMILIES


def _get(obj: Any, path: str) -> Any:
    return functools.reduce(getattr, path.split("."), obj)


def hf_config_of(hf_model: torch.nn.Module) -> ModelConfig:
    """Our `ModelConfig` of a HF model, from the converter without copying any weight (meta tensors,
    the embedding and unembedding passed by reference for the tie check)."""
    from .convert import from_hf
    from .hf_weights import resolve_tensor

    resolved: dict[int, torch.Tensor] = {}  # an offloaded (meta) embedding: its value, once per parameter

    def embedding(k: str, v: torch.Tensor) -> torch.Tensor:
        if id(v) not in resolved:
            resolved[id(v)] = resolve_tensor(hf_model, k, v)
        return resolved[id(v)]

    sd = {k: (embedding(k, v) if ("embed" in k or "wte" in k or "lm_head" in k) else
              torch.empty(v.shape, dtype=v.dtype, device="meta"))
          for k, v in hf_model.state_dict(keep_vars=True).items()}
    sd = {k: v.detach() for k, v in sd.items()}
    return from_hf(sd, config=hf_model.config, check=False).cfg


class NNsightSource:
    """An nnsight `LanguageModel` as an activation source (module docstring).

    lm: an `nnsight.LanguageModel`, or a HF `*ForCausalLM` (wrapped here; `device_map` models too).
    remote: passed to every `lm.trace(..., remote=remote)`.
    weights: optional `LazyModel` / `Transformer` for the weight views of the same model (else the
        HF module's own weights are read).
    tokenizer: the HF tokenizer to wrap a bare HF model with (token ids work without one).
    """

    def __init__(self, lm: Any, remote: bool = False, weights: Any = None, tokenizer: Any = None):
        import nnsight

        if not isinstance(lm, nnsight.LanguageModel):  # a HF model: nnsight insists on a tokenizer, ids need none
            lm = nnsight.LanguageModel(lm, tokenizer=tokenizer if tokenizer is not None else _placeholder_tokenizer())
        self.lm, self.remote, self.weights = lm, remote, weights
        hf = lm._module
        from .hf_weights import is_dispatched

        self.dispatched = is_dispatched(hf)  # accelerate hooks: offloaded weights are read from them
        self.hf_config = hf.config
        self.cfg = hf_config_of(hf)
        self.paths = _PATHS.get(hf.config.model_type, _DEFAULT_PATH)
        if self.paths[4] == "embed_out" and not hasattr(hf, "embed_out"):  # GPT-NeoX's head in newer transformers
            self.paths = (*self.paths[:4], "lm_head", *self.paths[5:])
        tok = getattr(lm, "tokenizer", None)
        self.tokenizer = None
        if tok is not None and len(tok) > 1:
            from .tokenizer import Tokenizer

            try:
                self.tokenizer = Tokenizer.from_any(tok)
            except TypeError:
                pass

    def __repr__(self) -> str:
        return f"NNsightSource({self.cfg.name!r}, remote={self.remote})"

    # ---------------------------------------------------------------- plumbing
    def check_tokens(self, tokens) -> torch.Tensor:
        t = torch.as_tensor(tokens)
        if t.ndim == 1:
            t = t[None]
        if t.ndim != 2 or t.dtype.is_floating_point or t.numel() == 0:
            raise ValueError(f"tokens must be integer ids [batch, pos] or [pos], got shape {tuple(t.shape)}")
        if int(t.min()) < 0 or int(t.max()) >= self.cfg.d_vocab:
            raise ValueError(f"tokens contains ids outside [0, {self.cfg.d_vocab})")
        return t.long()

    def _layer(self, l: int):
        return _get(self.lm, self.paths[0])[l]

    def _attn(self, l: int):
        return getattr(self._layer(l), self.paths[1])

    def _oproj(self, l: int):
        return getattr(self._attn(l), self.paths[2])

    def _check_eager(self) -> None:
        impl = getattr(self.hf_config, "_attn_implementation", None)
        if impl not in (None, "eager"):
            raise EagerAttentionRequired(
                f"this model runs attention with {impl!r}, which computes no attention pattern; load it with "
                f"attn_implementation='eager' (e.g. AutoModelForCausalLM.from_pretrained(..., "
                f"attn_implementation='eager'), or LanguageModel(name, attn_implementation='eager')), or call "
                f"model.set_attn_implementation('eager') on the Hugging Face model")

    def _param(self, module, leaf: str, like: Any) -> Any:
        """Parameter `leaf` of a module inside a trace (None if it has none). A model dispatched by
        accelerate keeps offloaded weights on the meta device outside its modules' own forward passes:
        their values are read from the hooks here and moved to `like`'s device."""
        if not self.dispatched:
            return getattr(module, leaf, None)
        from .hf_weights import resolve_tensor

        hf_module = getattr(module, "_module", module)
        t = getattr(hf_module, leaf, None)
        if t is None:
            return None
        return resolve_tensor(hf_module, leaf, t).to(like.device)

    # ---------------------------------------------------------------- operations
    @torch.no_grad()
    def patterns(self, tokens, layers) -> dict[int, torch.Tensor]:
        """`{layer: pattern [batch, head, query, key]}` of the given layers only."""
        self._check_eager()
        toks = self.check_tokens(tokens)
        layers = sorted(set(layers))
        saved = {}
        with self.lm.trace(toks, remote=self.remote):
            for l in layers:
                saved[l] = self._attn(l).output[1].save()
        out = {}
        for l, p in saved.items():
            if p is None:
                raise EagerAttentionRequired(f"layer {l} returned no attention pattern (SDPA / flash attention?): "
                                             "load the model with attn_implementation='eager'")
            out[l] = p.detach().float().cpu()
        return out

    @torch.no_grad()
    def patterns_and_value_norms(self, tokens, layers) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
        """`({layer: pattern [batch, head, query, key]}, {layer: ‖v‖ [batch, head, key]})` of the given layers
        in one trace. v is the value projection's output (bias included; after the layer's first norm), as the
        engine's `hook_v`; the norms are taken inside the trace (one number per key and K/V head leaves it) and
        repeated over each K/V head's query heads."""
        self._check_eager()
        toks = self.check_tokens(tokens)
        layers = sorted(set(layers))
        cfg = self.cfg
        E, KV = cfg.d_head, cfg.n_kv_heads or cfg.n_heads
        sites = {l: self._cut_sites(l)[2]["v"] for l in layers}  # (projection, its output's module, offset, stride)
        saved_p, saved_v = {}, {}
        with self.lm.trace(toks, remote=self.remote):
            for l in layers:  # in execution order: the value projection runs before the attention's output
                _, module, off, stride = sites[l]
                out = module.output
                saved_v[l] = torch.stack([out[..., off + s * stride:off + s * stride + E].float().norm(dim=-1)
                                          for s in range(KV)], -1).save()  # [batch, pos, K/V head]
                saved_p[l] = self._attn(l).output[1].save()
        pats, norms = {}, {}
        for l in layers:
            if saved_p[l] is None:
                raise EagerAttentionRequired(f"layer {l} returned no attention pattern (SDPA / flash attention?): "
                                             "load the model with attn_implementation='eager'")
            pats[l] = saved_p[l].detach().float().cpu()
            norms[l] = saved_v[l].detach().float().cpu().repeat_interleave(cfg.n_heads // KV, -1).transpose(1, 2)
        return pats, norms

    @torch.no_grad()
    def run(self, tokens, edits: dict | None = None, metric=None,
            save_z: tuple[int, ...] = ()) -> tuple[float | None, dict[int, torch.Tensor]]:
        """(metric value or None, `{layer: z [batch, pos, head, d_head]}` for `save_z`, taken before the
        edits): one forward pass with `edits[layer](z) -> z` applied to the per-head outputs, the metric
        (its mean) computed in the trace (`run_state`)."""
        val, zs = self._state(tokens, edits=edits, fn=metric, save_z=save_z)
        return (None if val is None else float(val.double().mean())), zs

    @torch.no_grad()
    def head_logit_attribution(self, tokens, pos: int, direction: torch.Tensor) -> torch.Tensor:
        """`[batch, layer, head]`: each head's write `z_h W_O^h` at `pos`, through the attention post-norm where
        the family has one (Gemma 2/3, OLMo-2: its scale frozen, times its weight), then through the final
        norm (scale frozen; LN: the write centred first; times its weight), dotted with `direction`. Gemma's
        norms multiply by `1 + w`. Computed inside the trace (one table leaves it)."""
        toks = self.check_tokens(tokens)
        cfg = self.cfg
        H, E, L = cfg.n_heads, cfg.d_head, cfg.n_layers
        conv1d = self.paths[5]
        ln = cfg.normalization in ("LN", "LNPre")
        if cfg.post_norm and ln:
            raise NotImplementedError("direct logit attribution: LayerNorm post-norms are not supported (RMS ones are)")
        with self.lm.trace(toks, remote=self.remote):
            writes = []
            for l in range(L):
                z = self._oproj(l).input[:, pos]  # [B, H*E]
                w = self._param(self._oproj(l), "weight", z)  # Linear [D, H*E]; Conv1D [H*E, D]
                W_O = (w if conv1d else w.T).reshape(H, E, -1)
                x = torch.einsum("bhe,hed->bhd", z.view(z.shape[0], H, E).to(W_O.dtype), W_O)
                if cfg.post_norm:  # through the attention output's RMS post-norm, its scale frozen
                    x = x.float() * self._post_factor(l, pos)[:, None]
                writes.append(x)
            norm = _get(self.lm, self.paths[3])
            resid = norm.input[:, pos]
            u = direction.to(resid.device, resid.dtype)
            if ln:
                centred = resid - resid.mean(-1, keepdim=True)
                scale = (centred.pow(2).mean(-1, keepdim=True) + cfg.ln_eps).sqrt()
            else:
                scale = (resid.pow(2).mean(-1, keepdim=True) + cfg.ln_eps).sqrt()
            nw = self._gain(norm, resid)
            uw = u * nw if nw is not None else u
            res = []
            for x in writes:
                x = x.to(uw.dtype)
                if ln:
                    x = x - x.mean(-1, keepdim=True)
                res.append((x / scale[:, None]) @ uw)
            out = torch.stack(res, 1).save()
        return out.detach().float().cpu()

    def _post_factor(self, l: int, pos: int | None = None) -> Any:
        """Inside a trace: `w / rms` of layer l's attention post-norm (RMS; Gemma: `1 + w`), from its input in
        this run (`[batch, pos, d_model]`, or `[batch, d_model]` at `pos`), float32: what multiplies a head's
        write on its way into the residual stream with the scale frozen (`Transformer.attn_write_factor`)."""
        post = self._layer(l).post_attention_layernorm
        x = post.input.float() if pos is None else post.input[:, pos].float()
        eps = self._eps(_get(self.lm._module, self.paths[0])[l].post_attention_layernorm)
        inv = 1.0 / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
        g = self._gain(post, x)
        return inv * g if g is not None else inv

    def _gain(self, norm, like) -> Any:
        """What a norm multiplies by after dividing by its scale: its weight, `1 + weight` in Gemma's norms,
        None without a weight."""
        w = self._param(norm, "weight", like)
        if w is None or self.hf_config.model_type not in ("gemma", "gemma2", "gemma3_text"):
            return w
        return 1.0 + w.float()

    def _first_norm(self, layer) -> Any:
        """A layer's first norm (ln1), the HF module or its envoy inside a trace."""
        return layer.ln_1 if self.hf_config.model_type == "gpt2" else layer.input_layernorm

    def _eps(self, norm) -> float:
        """A HF norm module's epsilon."""
        return float(getattr(norm, "eps", getattr(norm, "variance_epsilon", self.cfg.ln_eps)))

    def check_expansion_supported(self) -> None:
        if self.hf_config.model_type not in EXPANSION_FAMILIES:
            raise NotImplementedError(
                f"path expansion through nnsight is implemented for {', '.join(EXPANSION_FAMILIES)} (the norms' "
                f"scales and the MLP output are read inside the trace); this model is {self.hf_config.model_type!r}: "
                "convert it (cw.from_hf) or read its checkpoint lazily (cw.from_hf(path, lazy=True))")

    @torch.no_grad()
    def frozen_activations(self, tokens) -> dict[str, torch.Tensor | None]:
        """What path expansion freezes, from one trace: `{"pattern": [L, B, H, P, P], "ln1_scale": [L, B, P]
        (the first norm's scale, computed inside the trace; None without first norms: OLMo-2), "post_scale":
        [L, B, P] (the attention post-norm's scale, from its input; None without post-norms), "mlp_out":
        [L, B, P, D] (what the MLP adds to the residual stream: after its post-norm), "final_resid": [B, P, D]}`
        (the final norm's input), float32 on the CPU. Families of `EXPANSION_FAMILIES`."""
        self._check_eager()
        self.check_expansion_supported()
        toks = self.check_tokens(tokens)
        cfg = self.cfg
        L, centre = cfg.n_layers, cfg.normalization in ("LN", "LNPre")
        pre, post = cfg.pre_norm and cfg.normalization is not None, cfg.post_norm
        hf_layers = _get(self.lm._module, self.paths[0])
        eps1 = [self._eps(self._first_norm(hf_layers[l])) for l in range(L)] if pre else []
        eps_post = [self._eps(hf_layers[l].post_attention_layernorm) for l in range(L)] if post else []
        pats, scales, posts, mlps = [], [], [], []
        with self.lm.trace(toks, remote=self.remote):
            for l in range(L):  # in execution order: the first norm's input, attention, its post-norm, the MLP
                layer = self._layer(l)
                if pre:
                    x = self._first_norm(layer).input.float()
                    if centre:
                        x = x - x.mean(-1, keepdim=True)
                    scales.append((x.pow(2).mean(-1) + eps1[l]).sqrt().save())
                pats.append(self._attn(l).output[1].save())
                if post:  # (RMS: no centring; a LayerNorm post-norm is refused before this trace)
                    x = layer.post_attention_layernorm.input.float()
                    posts.append((x.pow(2).mean(-1) + eps_post[l]).sqrt().save())
                    mlps.append(layer.post_feedforward_layernorm.output.save())
                else:
                    mlps.append(layer.mlp.output.save())
            final = _get(self.lm, self.paths[3]).input.save()
        if any(p is None for p in pats):
            raise EagerAttentionRequired("a layer returned no attention pattern (SDPA / flash attention?): load the "
                                         "model with attn_implementation='eager'")

        def stack(xs):
            return torch.stack([torch.as_tensor(x).detach().float().cpu() for x in xs]) if xs else None

        return {"pattern": stack(pats), "ln1_scale": stack(scales), "post_scale": stack(posts),
                "mlp_out": stack(mlps), "final_resid": torch.as_tensor(final).detach().float().cpu()}

    # ---------------------------------------------------------------- path cuts
    def _head_write(self, l: int, z: torch.Tensor, h: int) -> torch.Tensor:
        """Head h's write `z_h W_O^h` `[..., d_model]` (no output bias: the engine's `result`) from z `[..., H*E]`."""
        E = self.cfg.d_head
        w = self._param(self._oproj(l), "weight", z)  # Linear [D, H*E]; Conv1D [H*E, D]
        W_O = w[h * E:(h + 1) * E] if self.paths[5] else w[:, h * E:(h + 1) * E].T
        return z[..., h * E:(h + 1) * E].to(W_O.dtype) @ W_O

    def _cut_sites(self, l: int) -> tuple[Any, Any, dict[str, tuple[Any, Any, int, int]]]:
        """Where path cuts recompute layer l's inputs: its first norm (None: OLMo-2's attention reads the raw
        stream), the envoy whose input is the residual entering the attention, and per input kind (projection,
        edited module, offset, stride): stored head s's columns of the projection's output start at
        `offset + s * stride`; the edited module is the projection, or OLMo-2's q / k norm over all heads
        (which the recomputed projection goes through before its head's columns are taken)."""
        cfg, mt, layer = self.cfg, self.hf_config.model_type, self._layer(l)
        E, H = cfg.d_head, cfg.n_heads
        KV = cfg.n_kv_heads or H
        if mt == "gpt2":  # Conv1D [D, 3D]: all queries, then all keys, then all values
            f, D = layer.attn.c_attn, cfg.d_model
            return layer.ln_1, layer.ln_1, {w: (f, f, i * D, E) for i, w in enumerate("qkv")}
        if mt == "gpt_neox":  # per head [q | k | v]
            f = layer.attention.query_key_value
            return layer.input_layernorm, layer.input_layernorm, {w: (f, f, i * E, 3 * E) for i, w in enumerate("qkv")}
        attn = layer.self_attn
        if mt == "phi3":  # all queries, then the K/V heads' keys, then their values
            f = attn.qkv_proj
            return (layer.input_layernorm, layer.input_layernorm,
                    {"q": (f, f, 0, E), "k": (f, f, H * E, E), "v": (f, f, (H + KV) * E, E)})
        if mt == "olmo2":
            return None, attn.q_proj, {"q": (attn.q_proj, attn.q_norm, 0, E), "k": (attn.k_proj, attn.k_norm, 0, E),
                                       "v": (attn.v_proj, attn.v_proj, 0, E)}
        return (layer.input_layernorm, layer.input_layernorm,
                {w: (getattr(attn, f"{w}_proj"),) * 2 + (0, E) for w in "qkv"})

    def _recompute(self, proj, edited, cols: slice, x: torch.Tensor) -> torch.Tensor:
        """The edited module's output columns `cols` computed from `x [..., d_model]` (normalised): the
        projection's, or (OLMo-2) its whole output through the q / k norm over all heads, as the engine's
        `Transformer.project` recomputes a cut head."""
        w = self._param(proj, "weight", x)  # Linear [out, D]; Conv1D [D, out]
        if edited is proj:
            out = x.to(w.dtype) @ (w[:, cols] if self.hf_config.model_type == "gpt2" else w[cols].T)
            b = self._param(proj, "bias", x)
            return out + b[cols] if b is not None else out
        full = (x.to(w.dtype) @ w.T).float()
        eps = self._eps(edited)
        normed = full / (full.pow(2).mean(-1, keepdim=True) + eps).sqrt() * self._param(edited, "weight", x).float()
        return normed[..., cols]

    def _norm1(self, norm, x: torch.Tensor) -> torch.Tensor:
        """The layer's first norm on a residual `x`, in float32 as the HF norms compute it (`x` itself
        without one)."""
        if norm is None:
            return x
        x32 = x.float()
        if self.cfg.normalization in ("LN", "LNPre"):
            x32 = x32 - x32.mean(-1, keepdim=True)
            eps = norm.eps
        else:
            eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", self.cfg.ln_eps))
        y = (x32 / (x32.pow(2).mean(-1, keepdim=True) + eps).sqrt()).to(x.dtype)
        g = self._gain(norm, x)  # (Gemma: 1 + w)
        y = y * g if g is not None else y
        b = self._param(norm, "bias", x)
        return y + b if b is not None else y

    def check_cuts_supported(self) -> None:
        if self.hf_config.model_type not in CUT_FAMILIES:
            raise NotImplementedError(f"path cuts through nnsight are implemented for {', '.join(CUT_FAMILIES)} "
                                      f"(separate q/k/v or GPT-2's fused projection after a first norm); "
                                      f"this model is {self.hf_config.model_type!r}: convert it (cw.from_hf) and "
                                      "cut on our own Transformer")

    @torch.no_grad()
    def head_writes(self, tokens, heads: list[tuple[int, int]]) -> dict[tuple[int, int], torch.Tensor]:
        """`{(l, h): head h's write `z_h W_O^h` [batch, pos, d_model] (float32)}`: one trace sends back those
        layers' z, the writes are formed here."""
        _, zs = self.run(tokens, save_z=tuple(sorted({l for l, _ in heads})))
        return {(l, h): zs[l][:, :, h] @ self._head_W_O(l, h).float() for l, h in heads}

    def _head_W_O(self, l: int, h: int) -> torch.Tensor:
        """Head h of layer l's `W_O` `[d_head, d_model]`, read from the output projection's weight."""
        w = self._weight(f"{self.paths[0]}.{l}.{self.paths[1]}.{self.paths[2]}.weight")
        E = self.cfg.d_head
        return (w[h * E:(h + 1) * E] if self.paths[5] else w[:, h * E:(h + 1) * E].T).detach().cpu()

    @torch.no_grad()
    def reference_means(self, reference, z_layers=(), write_heads=()
                        ) -> tuple[dict[int, torch.Tensor], dict[tuple[int, int], torch.Tensor]]:
        """Means over `reference`'s batch and positions from one trace (it sends back the layers' z):
        `({layer: z [head, d_head]} for z_layers, {(l, h): head h's write [d_model]} for write_heads)`; a write
        is linear in z, so its mean is `mean(z) W_O^h` (mean ablation of heads and of path cuts' sources)."""
        layers = tuple(sorted(set(z_layers) | {l for l, _ in write_heads}))
        if not layers:
            return {}, {}
        _, zs = self.run(reference, save_z=layers)
        means = {l: zs[l].mean((0, 1)) for l in layers}
        return ({l: means[l] for l in z_layers},
                {(l, h): means[l][h] @ self._head_W_O(l, h).float() for l, h in write_heads})

    @torch.no_grad()
    def run_cuts(self, tokens, groups: dict, metric, res_mean: dict | None = None) -> float:
        """The metric (its mean) of a forward pass with path cuts (`run_state`)."""
        self.check_cuts_supported()
        return float(self.run_state(tokens, groups=groups, res_mean=res_mean, fn=metric).double().mean())

    @torch.no_grad()
    def resid_pre(self, tokens) -> dict[int, torch.Tensor]:
        """`{layer: the residual stream entering it [batch, pos, d_model]}` (each decoder layer's input)."""
        toks = self.check_tokens(tokens)
        saved = {}
        with self.lm.trace(toks, remote=self.remote):
            for l in range(self.cfg.n_layers):
                saved[l] = self._layer(l).input.save()
        return {l: x.detach().float().cpu() for l, x in saved.items()}

    @torch.no_grad()
    def run_state(self, tokens, edits: dict | None = None, groups: dict | None = None, res_mean: dict | None = None,
                  fn=None, resid_edits: dict | None = None) -> torch.Tensor:
        """`fn(logits, tokens)` (a tensor, sent back as it is) of one forward pass in one trace, with
        `edits[layer](z) -> z` applied to the per-head outputs (as `run`) and the path cuts `groups[(dst layer,
        kind)][stored head] = [src heads]` (as `interventions._path_hooks` groups them): each stored head's
        queries / keys / values recomputed from the residual entering dst's layer minus the sources' writes
        (minus their writes' reference means, `res_mean`), through the layer's first norm. A source's write
        is taken after its own edit (an ablated head writes its ablated output), as the engine's hooks do.
        `resid_edits[layer](resid) -> resid` replaces the residual entering a layer first."""
        return self._state(tokens, edits, groups, res_mean, fn, resid_edits)[0]

    def _state(self, tokens, edits: dict | None = None, groups: dict | None = None, res_mean: dict | None = None,
               fn=None, resid_edits: dict | None = None, save_z: tuple[int, ...] = ()
               ) -> tuple[torch.Tensor | None, dict[int, torch.Tensor]]:
        """`run_state`'s trace, also sending back `save_z` layers' z (before their edits); `fn` None: no value."""
        groups, edits, resid_edits = groups or {}, edits or {}, resid_edits or {}
        if groups:
            self.check_cuts_supported()
        toks = self.check_tokens(tokens)
        H, E = self.cfg.n_heads, self.cfg.d_head
        src_layers = {l1 for per in groups.values() for srcs in per.values() for l1, _ in srcs}
        dst_layers = {l for l, _ in groups}
        writes: dict[tuple[int, int], Any] = {}
        factors: dict[int, Any] = {}  # RMS post-norm (Gemma 2/3, OLMo-2): what multiplies each head's write, frozen
        zs: dict[int, Any] = {}
        with self.lm.trace(toks, remote=self.remote):
            for l in sorted(src_layers | dst_layers | set(edits) | set(resid_edits) | set(save_z)):
                if l in resid_edits:
                    x = self._layer(l).input
                    self._layer(l).input = resid_edits[l](x.clone()).to(x.dtype)
                if l in dst_layers:  # in execution order: the stream's reader's input, then the edited modules
                    norm, reader, sites = self._cut_sites(l)
                    resid = reader.input
                    cut: dict[Any, list] = {}
                    for which in "qkv":
                        for stored, srcs in groups.get((l, which), {}).items():
                            removed = 0
                            for s in srcs:
                                r = writes[s]
                                r = r - res_mean[s].to(r.device, r.dtype) if res_mean else r
                                if factors.get(s[0]) is not None:  # through the source block's post-norm
                                    r = r.float() * factors[s[0]]
                                removed = removed + r
                            proj, edited, offset, stride = sites[which]
                            start = offset + stored * stride
                            new = self._recompute(proj, edited, slice(start, start + E),
                                                  self._norm1(norm, resid - removed))
                            cut.setdefault(edited, []).append((start, new))
                    for module in dict.fromkeys(sites[w][1] for w in "qkv"):
                        if module in cut:
                            out = module.output.clone()
                            for start, new in cut[module]:
                                out[..., start:start + E] = new.to(out.dtype)
                            module.output = out
                if l in edits or l in src_layers or l in save_z:
                    z = self._oproj(l).input
                    if l in save_z:
                        zs[l] = z.view(*z.shape[:-1], H, E).clone().save()
                    if l in edits:
                        z = edits[l](z.view(*z.shape[:-1], H, E).clone()).reshape(z.shape).to(z.dtype)
                        self._oproj(l).input = z
                    if l in src_layers:
                        if self.cfg.post_norm:
                            factors[l] = self._post_factor(l)
                        for s in sorted({s for per in groups.values() for srcs in per.values() for s in srcs
                                         if s[0] == l}):
                            writes[s] = self._head_write(l, z, s[1])
            if fn is not None:
                val = fn(self.lm.output.logits.float(), toks.to(self.lm.output.logits.device)).save()
        value = None if fn is None else torch.as_tensor(val).detach().cpu()
        return value, {l: z.detach().float().cpu() for l, z in zs.items()}

    def _weight(self, name: str) -> torch.Tensor:
        """The HF module's parameter `name`, read outside a trace (offloaded by accelerate: from its hook)."""
        from .hf_weights import resolve_tensor

        return resolve_tensor(self.lm._module, name, _get(self.lm._module, name))

    @torch.no_grad()
    def centred_unembedding(self, ids) -> torch.Tensor:
        """`W_U[:, ids] − mean_c W_U[:, c]` `[d_model, len(ids)]` from the unembedding module's weight, float32."""
        w = self._weight(f"{self.paths[4]}.weight").detach().cpu().double()  # [V, D]
        ids = torch.as_tensor(ids, dtype=torch.long).flatten()
        return (w[ids] - w.mean(0)).T.float()

    def unembed_direction(self, token) -> torch.Tensor:
        """`W_U[:, token]` (or a difference for `(a, b)`) from the unembedding module's weight."""
        w = self._weight(f"{self.paths[4]}.weight")  # [V, D]
        if isinstance(token, (tuple, list)):
            return (w[token[0]] - w[token[1]]).detach()
        return w[token].detach()


class TransformerSource:
    """Our `Transformer` through the same interface (hooks), so the two sources can be compared."""

    def __init__(self, model):
        self.model, self.cfg, self.tokenizer = model, model.cfg, model.tokenizer

    def check_tokens(self, tokens) -> torch.Tensor:
        return self.model.check_tokens(tokens)

    @torch.no_grad()
    def patterns(self, tokens, layers) -> dict[int, torch.Tensor]:
        out = {}

        def keep(x, hook):
            out[hook.layer()] = x.detach().float().cpu()

        self.model.run_with_hooks(self.check_tokens(tokens), fwd_hooks=[(("pattern", l), keep) for l in layers])
        return out

    @torch.no_grad()
    def patterns_and_value_norms(self, tokens, layers) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
        pats, norms = {}, {}

        def keep(x, hook):
            pats[hook.layer()] = x.detach().float().cpu()

        def keep_v(x, hook):  # [batch, pos, head, d_head] -> [batch, head, pos]
            norms[hook.layer()] = x.detach().float().norm(dim=-1).transpose(1, 2).cpu()

        hooks = [h for l in layers for h in ((("pattern", l), keep), (("v", l), keep_v))]
        self.model.run_with_hooks(self.check_tokens(tokens), fwd_hooks=hooks)
        return pats, norms

    @torch.no_grad()
    def run(self, tokens, edits=None, metric=None, save_z=()):
        toks = self.check_tokens(tokens)
        zs: dict[int, torch.Tensor] = {}
        hooks = []
        for l in sorted(set(edits or {}) | set(save_z)):
            def fn(z, hook, l=l):
                if l in save_z:
                    zs[l] = z.detach().float().cpu().clone()
                return edits[l](z) if edits and l in edits else z
            hooks.append((("z", l), fn))
        logits = self.model.run_with_hooks(toks, fwd_hooks=hooks)
        val = None if metric is None else float(torch.as_tensor(metric(logits, toks)).double().mean())
        return val, zs


def _placeholder_tokenizer():
    """A one-token tokenizer: nnsight wants one to wrap a model; token ids never go through it."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel(vocab={"[UNK]": 0}, unk_token="[UNK]"))
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[UNK]")


def is_source(model: Any) -> bool:
    """Whether `model` should be run through an activation source rather than our hooks: an nnsight
    model, a Hugging Face model, a lazy checkpoint (`LazyModel`, run layer by layer), or a source already."""
    from .lazy import is_lazy
    from .lazy_source import LazySource

    if isinstance(model, (NNsightSource, TransformerSource, LazySource)) or is_lazy(model):
        return True
    mod = type(model).__module__
    return mod.startswith("nnsight") or (mod.startswith("transformers") and isinstance(model, torch.nn.Module))


def as_source(model: Any, remote: bool = False) -> ActivationSource:
    """The activation source of `model` (an nnsight `LanguageModel`, a HF model, a `LazyModel`, our `Transformer`)."""
    from .lazy import is_lazy
    from .lazy_source import LazySource
    from .transformer import Transformer

    if isinstance(model, (NNsightSource, TransformerSource, LazySource)):
        return model
    if is_lazy(model):
        return LazySource(model)
    if isinstance(model, Transformer):
        return TransformerSource(model)
    return NNsightSource(model, remote=remote)
