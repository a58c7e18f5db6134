"""A lazy checkpoint (`LazyModel`) as an activation source: the forward pass run one layer at a time.

The engine's activation functions (attention patterns, head scores, ablation, patching, direct logit
attribution; `circwidgets.engine.activations`) take any object with the activation-source interface
(`nnsight_source.ActivationSource`). `LazySource` gives a `LazyModel` that interface, so the views
that need a forward pass (the composition view's patterns, the attention view, ...) work on a
checkpoint that is never in memory whole:

- layer `l` is converted by `LazyModel.layer_module` (the converter's own code, unfolded weights,
  attention and MLP, float32), run on the residual stream left by layer `l - 1` (substituted at its
  `hook_resid_pre`), and freed; layer 0 also embeds the tokens (only their rows of the embedding
  are read);
- the logits, when a metric needs them, come from the final norm and blocks of unembedding rows
  (`LazyModel.block_rows` at a time);
- a pass that only needs patterns stops after the last layer asked for.

So the numbers are those of `lazy.to_transformer()` (the eager model of the same checkpoint) up to
float32 rounding, with peak memory one layer plus the residual stream. Each call reads the layers it
needs from the checkpoint files again (nothing is kept between calls).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .config import ModelConfig
from .hooks import get_act_name
from .lazy import LazyModel

__all__ = ["LazySource"]

LayerHook = Callable[[torch.Tensor], torch.Tensor | None]


def _long(cfg: ModelConfig) -> bool:
    """Whether a layer-by-layer pass over this model takes long enough for a progress bar."""
    return cfg.n_layers * cfg.d_model * cfg.d_model > 5e8


class _Stop(Exception):
    """Raised at a layer's `hook_resid_post`: the one-layer model's own (one-row) unembedding is not needed."""


class LazySource:
    """A `LazyModel` through the activation-source interface (module docstring).

    `cfg`, `tokenizer`, `check_tokens` are the lazy model's; `patterns`, `run` and
    `head_logit_attribution` run the forward pass layer by layer.
    """

    def __init__(self, lazy: LazyModel, dtype: torch.dtype = torch.float32):
        self.lazy = lazy
        self.dtype = dtype  # of each layer's weights and the activations (float64 for exact comparisons)
        self.current: Any = None  # during `forward`: the one-layer module being run
        self.cfg: ModelConfig = lazy.cfg
        self.tokenizer: Any = lazy.tokenizer

    def __repr__(self) -> str:
        return f"LazySource({str(self.lazy.path)!r})"

    def check_tokens(self, tokens) -> torch.Tensor:
        return self.lazy.check_tokens(tokens)

    # ---------------------------------------------------------------- the forward pass
    @torch.no_grad()
    def forward(self, tokens, layer_hooks: dict[int, list[tuple[str, LayerHook]]] | None = None,
                last_layer: int | None = None) -> torch.Tensor | None:
        """Run the model on `tokens [batch, pos]` one layer at a time.

        layer_hooks: `{layer: [(short hook name, fn), ...]}` with names as `get_act_name` takes them
            ("pattern", "z", "result", ...); `fn(activation)` may return a replacement (same shape).
        last_layer: stop after this layer's block (no logits: returns None); default run every
            layer and return the logits `[batch, pos, d_vocab]` (in `self.dtype`, float32 by default).
        """
        from tqdm.auto import tqdm

        lazy, cfg = self.lazy, self.cfg
        toks = self.check_tokens(tokens)
        layer_hooks = layer_hooks or {}
        n = cfg.n_layers if last_layer is None else last_layer + 1
        rows, first_ids = toks.unique(return_inverse=True)  # layer 0 embeds these rows only
        resid: torch.Tensor | None = None
        for layer in tqdm(range(n), desc="forward pass, layer by layer", disable=not _long(cfg), leave=False):
            module = lazy.layer_module(layer, rows=rows if layer == 0 else None, dtype=self.dtype)
            self.current = module  # the layer being run (hooks that recompute from its weights read it)
            # later layers: the residual stream replaces the (one-row) embedding
            ids = first_ids if layer == 0 else torch.zeros_like(toks)
            out: dict[str, torch.Tensor] = {}

            def substitute(x, hp, resid=resid):
                return resid

            def keep(x, hp, out=out):
                out["resid"] = x
                raise _Stop

            hooks: list = [] if layer == 0 else [("blocks.0.hook_resid_pre", substitute)]
            for name, fn in layer_hooks.get(layer, ()):
                hooks.append((get_act_name(name, 0), lambda x, hp, fn=fn: fn(x)))
            hooks.append(("blocks.0.hook_resid_post", keep))
            try:
                module.run_with_hooks(ids, hooks)
            except _Stop:
                pass
            resid = out["resid"]
            self.current = None
            del module
        if last_layer is not None:
            return None
        return self._logits(resid)

    def _final(self, rows) -> torch.nn.Module:
        """A one-layer module holding the final norm and the unembedding rows `rows` (in `self.dtype`)."""
        return self.lazy._convert(None, rows).to(self.dtype)

    def _logits(self, resid: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        V = cfg.d_vocab
        logits = torch.empty(*resid.shape[:-1], V, dtype=self.dtype)
        x = None
        for s in range(0, V, self.lazy.block_rows):
            rows = slice(s, min(s + self.lazy.block_rows, V))
            m = self._final(rows)
            if x is None:
                x = m._norm(resid, "ln_final", None)
            block = x @ m.W_U
            if cfg.biases:
                block = block + m.b_U
            logits[..., rows] = block
        if cfg.final_softcap is not None:
            logits = cfg.final_softcap * torch.tanh(logits / cfg.final_softcap)
        return logits

    # ---------------------------------------------------------------- the interface
    @torch.no_grad()
    def patterns(self, tokens, layers) -> dict[int, torch.Tensor]:
        """`{layer: pattern [batch, head, query, key]}` of the given layers; stops after the last one."""
        layers = sorted(set(int(l) for l in layers))
        if not layers:
            return {}
        out: dict[int, torch.Tensor] = {}

        def keep(layer):
            def fn(p):
                out[layer] = p.detach().float().clone()
            return fn

        self.forward(tokens, {l: [("pattern", keep(l))] for l in layers}, last_layer=layers[-1])
        return out

    @torch.no_grad()
    def patterns_and_value_norms(self, tokens, layers) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
        """`({layer: pattern [batch, head, query, key]}, {layer: ‖v‖ [batch, head, key]})` of the given
        layers (the layer module's `hook_v`: per query head); stops after the last one."""
        layers = sorted(set(int(l) for l in layers))
        pats: dict[int, torch.Tensor] = {}
        norms: dict[int, torch.Tensor] = {}
        if not layers:
            return pats, norms

        def keep(layer):
            def pattern(p):
                pats[layer] = p.detach().float().clone()

            def v(x):  # [batch, pos, head, d_head]
                norms[layer] = x.detach().float().norm(dim=-1).transpose(1, 2)
            return [("v", v), ("pattern", pattern)]

        self.forward(tokens, {l: keep(l) for l in layers}, last_layer=layers[-1])
        return pats, norms

    @torch.no_grad()
    def run(self, tokens, edits: dict | None = None, metric=None,
            save_z: tuple[int, ...] = ()) -> tuple[float | None, dict[int, torch.Tensor]]:
        """(metric value or None, `{layer: z [batch, pos, head, d_head]}` for `save_z`, taken before the
        edits), with `edits[layer](z)` replacing that layer's per-head outputs (`run_state`; as
        `NNsightSource.run`)."""
        val, zs = self._state(tokens, edits=edits, fn=metric, save_z=save_z)
        return (None if val is None else float(val.double().mean())), zs

    @torch.no_grad()
    def head_logit_attribution(self, tokens, pos: int, direction: torch.Tensor) -> torch.Tensor:
        """`[batch, layer, head]`: each head's write at `pos` (`z_h W_O^h`), through the attention post-norm
        where the family has one (Gemma 2/3, OLMo-2: its scale frozen, times its weight), then through the
        final norm with its scale frozen (LN: centred first) and its weight, dotted with `direction` (an
        unembedding column)."""
        cfg = self.cfg
        ln = cfg.normalization in ("LN", "LNPre")
        if cfg.post_norm and ln:
            raise NotImplementedError("direct logit attribution: LayerNorm post-norms are not supported (RMS ones are)")
        writes: dict[int, torch.Tensor] = {}

        def keep(layer):
            def fn(result):  # [batch, pos, head, d_model]
                writes[layer] = result[:, pos].detach().float().clone()
            return fn

        def through_post_norm(layer):
            def fn(scale):  # [batch, pos, 1]: runs after `result` in the layer; the layer's own post-norm weight
                w = self.current.ln1_post_w[0].detach().float()
                writes[layer] = writes[layer] / scale[:, pos, None].detach().float() * w
            return fn

        resid: dict[str, torch.Tensor] = {}

        def keep_resid(x):
            resid["final"] = x[:, pos].detach().float().clone()

        hooks = {l: [("result", keep(l))] for l in range(cfg.n_layers)}
        if cfg.post_norm:
            for l in range(cfg.n_layers):
                hooks[l].append(("blocks.0.ln1_post.hook_scale", through_post_norm(l)))
        hooks[cfg.n_layers - 1].append(("resid_post", keep_resid))
        self.forward(tokens, hooks, last_layer=cfg.n_layers - 1)
        m = self._final(slice(0, 1))
        r = resid["final"]
        if ln:
            r = r - r.mean(-1, keepdim=True)
        scale = (r.pow(2).mean(-1, keepdim=True) + cfg.ln_eps).sqrt() if cfg.normalization else torch.ones(1)
        w = m._parameters.get("ln_final_w")
        u = direction.float() * (w.float() if w is not None else 1.0)
        out = []
        for l in range(cfg.n_layers):
            x = writes[l]
            if ln:
                x = x - x.mean(-1, keepdim=True)
            out.append((x / scale[:, None]) @ u)
        return torch.stack(out, 1)

    # ---------------------------------------------------------------- path cuts
    def check_cuts_supported(self) -> None:
        """Every family `from_hf` converts can be cut (the layer modules are our own `Transformer`s)."""

    @torch.no_grad()
    def head_writes(self, tokens, heads: list[tuple[int, int]]) -> dict[tuple[int, int], torch.Tensor]:
        """`{(l, h): head h's write `result` [batch, pos, d_model] (float32)}`: one pass, stopped after the
        last of those layers."""
        out: dict[tuple[int, int], torch.Tensor] = {}
        by_layer: dict[int, list[int]] = {}
        for l, h in heads:
            by_layer.setdefault(l, []).append(h)

        def keep(layer):
            def fn(result):
                for h in by_layer[layer]:
                    out[(layer, h)] = result[:, :, h].float().clone()
            return fn

        self.forward(tokens, {l: [("result", keep(l))] for l in by_layer}, last_layer=max(by_layer))
        return out

    @torch.no_grad()
    def reference_means(self, reference, z_layers=(), write_heads=()
                        ) -> tuple[dict[int, torch.Tensor], dict[tuple[int, int], torch.Tensor]]:
        """Means over `reference`'s batch and positions, from one pass stopped after the last layer asked for:
        `({layer: z [head, d_head]} for z_layers, {(l, h): head h's write `result` [d_model]} for write_heads)`,
        float32 (mean ablation of heads and of path cuts' sources together)."""
        z_means: dict[int, torch.Tensor] = {}
        w_means: dict[tuple[int, int], torch.Tensor] = {}
        hooks: dict[int, list] = {}
        for l in z_layers:
            hooks.setdefault(l, []).append(("z", lambda z, l=l: z_means.__setitem__(l, z.float().mean((0, 1)))))
        for l in sorted({l for l, _ in write_heads}):
            hs = [h for l2, h in write_heads if l2 == l]
            hooks.setdefault(l, []).append(
                ("result", lambda r, l=l, hs=hs: w_means.update({(l, h): r[:, :, h].float().mean((0, 1)) for h in hs})))
        if hooks:
            self.forward(reference, hooks, last_layer=max(hooks))
        return z_means, w_means

    @torch.no_grad()
    def run_cuts(self, tokens, groups: dict, metric, res_mean: dict | None = None) -> float:
        """The metric (its mean) of a forward pass with path cuts (`run_state`)."""
        return float(self.run_state(tokens, groups=groups, res_mean=res_mean, fn=metric).double().mean())

    @torch.no_grad()
    def resid_pre(self, tokens) -> dict[int, torch.Tensor]:
        """`{layer: the residual stream entering it [batch, pos, d_model]}` (`hook_resid_pre`), every layer."""
        out: dict[int, torch.Tensor] = {}

        def keep(layer):
            def fn(x):
                out[layer] = x.detach().clone()
            return fn

        L = self.cfg.n_layers
        self.forward(tokens, {l: [("resid_pre", keep(l))] for l in range(L)}, last_layer=L - 1)
        return out

    @torch.no_grad()
    def run_state(self, tokens, edits: dict | None = None, groups: dict | None = None, res_mean: dict | None = None,
                  fn=None, resid_edits: dict | None = None) -> torch.Tensor:
        """`fn(logits, tokens)` of a forward pass with `edits[layer](z) -> z` applied to the per-head outputs
        (as `run`) and path cuts, `groups[(dst layer, kind)][stored head] = [src heads]`: the hooks of
        `engine.interventions.ablation_hooks` (dst's queries / keys / values recomputed from the residual
        entering its layer minus what the sources wrote: their `result`, after their own edit, times a
        post-norm's frozen scale where there is one, `Transformer.attn_write_factor`; through ln1), on the
        one-layer modules. `resid_edits[layer](resid) -> resid` replaces the residual entering a layer first."""
        return self._state(tokens, edits, groups, res_mean, fn, resid_edits)[0]

    def _state(self, tokens, edits: dict | None = None, groups: dict | None = None, res_mean: dict | None = None,
               fn=None, resid_edits: dict | None = None, save_z: tuple[int, ...] = ()
               ) -> tuple[torch.Tensor | None, dict[int, torch.Tensor]]:
        """`run_state`'s pass, also sending back `save_z` layers' z (before their edits); `fn` None: no value,
        and the pass stops after the last layer it touches."""
        cfg = self.cfg
        groups, edits = groups or {}, edits or {}
        srcs_of = {}
        for per in groups.values():
            for srcs in per.values():
                for l1, h1 in srcs:
                    srcs_of.setdefault(l1, set()).add(h1)
        store: dict[Any, torch.Tensor] = {}
        hooks: dict[int, list] = {}

        def keep_result(layer):
            def fn(result):
                store[("factor", layer)] = self.current.attn_write_factor(result, 0)  # a post-norm's, or None
                for h in srcs_of[layer]:
                    store[(layer, h)] = result[:, :, h]
            return fn

        def keep_resid(layer):
            def fn(resid):
                store[("resid_pre", layer)] = resid
            return fn

        def recompute(layer, which, per_head):
            def fn(act):  # [batch, pos, head, d_head] per query head
                module, act = self.current, act.clone()
                for stored, srcs in per_head.items():
                    removed = 0
                    for s in srcs:
                        r = store[s] - (res_mean[s] if res_mean else 0)
                        factor = store[("factor", s[0])]
                        removed = removed + (r if factor is None else r * factor)
                    new = module.project_from_stream(store[("resid_pre", layer)] - removed, 0, which)[:, :, stored]
                    readers = cfg.kv_group(stored) if cfg.grouped_kv and which != "q" else [stored]
                    act[:, :, readers] = new[:, :, None].to(act.dtype)
                return act
            return fn

        for layer, edit in (resid_edits or {}).items():  # first: a cut in this layer reads the edited stream
            hooks.setdefault(layer, []).append(("resid_pre", lambda r, edit=edit: edit(r.clone())))
        for layer, _ in groups:
            hooks.setdefault(layer, []).append(("resid_pre", keep_resid(layer)))
        for (layer, which), per_head in groups.items():
            hooks[layer].append((which, recompute(layer, which, per_head)))
        for layer in srcs_of:  # after a dst layer's own hooks: its result comes after its q/k/v
            hooks.setdefault(layer, []).append(("result", keep_result(layer)))
        zs: dict[int, torch.Tensor] = {}

        def at_z(layer):
            def hook(z):
                if layer in save_z:
                    zs[layer] = z.detach().float().clone()
                return edits[layer](z.clone()) if layer in edits else None
            return hook

        for layer in set(edits) | set(save_z):  # z comes before result: a source's write is its edited output
            hooks.setdefault(layer, []).append(("z", at_z(layer)))
        toks = self.check_tokens(tokens)
        if fn is None:  # nothing past the last layer touched
            if hooks:
                self.forward(toks, hooks, last_layer=max(hooks))
            return None, zs
        return torch.as_tensor(fn(self.forward(toks, hooks), toks)), zs

    @torch.no_grad()
    def centred_unembedding(self, ids) -> torch.Tensor:
        """`W_U[:, ids] − mean_c W_U[:, c]` `[d_model, len(ids)]`, unfolded, float32. The mean over the
        vocabulary is one pass over it in blocks, cached with the checkpoint's Gram matrices (on disk)."""
        ids = torch.as_tensor(ids, dtype=torch.long).flatten()

        def column_mean() -> dict[str, torch.Tensor]:
            V = self.cfg.d_vocab
            total = torch.zeros(self.cfg.d_model, dtype=torch.float64)
            for s in range(0, V, self.lazy.block_rows):  # (stored weights convert exactly in any float dtype)
                total += self._final(torch.arange(s, min(s + self.lazy.block_rows, V))).W_U.double().sum(1)
            return {"mean": total / V}

        mean = self.lazy.cached("unembedding column mean (unfolded)", column_mean)["mean"]
        return (self._final(ids).W_U.double() - mean[:, None]).float()

    def unembed_direction(self, token) -> torch.Tensor:
        """`W_U[:, token]` (or `W_U[:, a] - W_U[:, b]` for `(a, b)`), unfolded, float32 `[d_model]`."""
        ids = list(token) if isinstance(token, (tuple, list)) else [token]
        W_U = self._final(torch.tensor(ids)).W_U.float()
        return W_U[:, 0] - W_U[:, 1] if len(ids) == 2 else W_U[:, 0]
