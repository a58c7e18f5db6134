"""The weights-only analyses on a `LazyModel` (`cw.from_hf(path, lazy=True)`), streamed.

Same definitions as `circuits`, `composition`, `skip_trigrams` and `virtual` (which call into this
module when handed a lazy model); what differs is only the order of work:

- one layer is converted and folded at a time (`LazyModel.layer_weights`, float32), used and freed;
- grouped-query K/V stay shared: products with `W_K`, `W_V` are formed once per K/V head, and the
  per-query-head factor (`W_Q`, `W_O`, a small `R` of a QR) is applied after, on `d_head`-sized blocks;
- the vocabulary enters only through the Gram matrices `W_E^T W_E`, `W_U W_E` (`LazyModel.grams`:
  one blockwise pass, cached on disk) or, for skip-trigrams, through the head's `[d_vocab, d_head]`
  factors (one blockwise pass per head, cached on disk too).

Peak memory: one layer's attention weights in float32 plus the `[L, H, d_head, d_head]` results
(composition additionally holds every layer's right-hand `[d_model, d_head]` blocks: `L * n_kv`
of them for K- and V-composition, `L * H` for Q). Progress bars (tqdm.auto) on every pass over
layers or vocabulary; Ctrl-C stops between blocks with nothing half-written (cache files are
replaced atomically).
"""

from __future__ import annotations

import torch

from ..model.lazy import LazyModel, is_lazy
from ._check import check_finite_output, check_layer_head

__all__ = ["circuit_cores", "composition_scores", "flops_estimate", "offset_profile", "resolve",
           "skip_trigram_factors", "skip_trigram_query", "skip_trigrams", "virtual_weights"]


_RESOLVED: dict[int, tuple] = {}


def resolve(model):
    """The weights of an nnsight / Hugging Face model, for the weight views: a `LazyModel` over its
    checkpoint directory when the model was loaded from a local one with safetensors (streamed, never
    a second copy in memory), else `from_hf` of the module (converted once per object)."""
    import os

    from ..model import from_hf
    from ..model.nnsight_source import is_source

    if is_lazy(model) or not is_source(model):
        return model
    lazy = getattr(model, "lazy", None)  # a LazySource: its checkpoint
    if is_lazy(lazy):
        return lazy
    hf = getattr(model, "lm", model)  # an NNsightSource
    hf = getattr(hf, "_module", hf)  # an nnsight LanguageModel
    hit = _RESOLVED.get(id(hf))
    if hit is not None and hit[0]() is hf:
        return hit[1]
    path = getattr(hf.config, "_name_or_path", "") or ""
    if os.path.isdir(path) and any(f.endswith(".safetensors") for f in os.listdir(path)):
        out = LazyModel(path)
    elif any(p.is_meta for p in hf.parameters()):
        raise TypeError(
            f"this {type(model).__name__}'s weights are not loaded here (a model that was never dispatched, or one "
            "run remotely) and it has no local checkpoint to read: the weight views need them. Load it with "
            "dispatch=True, or pass a local checkpoint (cw.from_hf(path, lazy=True)); the activation functions and "
            "cw.paths run it through traces (docs/scale.md)")
    else:
        out = from_hf(hf)
    import weakref

    _RESOLVED[id(hf)] = (weakref.ref(hf), out)
    return out


def _bar(it, desc: str, total: int, big: bool):
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, total=total, disable=not big, leave=False)


def _big(model: LazyModel) -> bool:
    c = model.cfg
    return c.n_layers * c.n_heads * c.d_model * c.d_head * c.d_model > 5e9  # a few seconds of GEMM


def _kv_index(model: LazyModel, device=None) -> torch.Tensor:
    """`[H]`: the K/V head each query head reads."""
    c = model.cfg
    return torch.arange(c.n_heads, device=device) // c.kv_group_size


@torch.no_grad()
def _layer_cores(model: LazyModel, layer: int, circuit: str, full: bool, offset,
                 heads: torch.Tensor | None = None) -> torch.Tensor:
    """`[len(heads), E, E]` cores of one layer: OV `W_O (W_U W_E) W_V`, QK `W_K^T (W_E^T W_E) W_Q`."""
    w = model.layer_weights(layer)
    kv = _kv_index(model)
    heads = torch.arange(model.cfg.n_heads) if heads is None else heads
    if circuit == "ov":
        mid = model.grams()["UE"] if full else None
        right = w["W_V"] if mid is None else mid @ w["W_V"]  # [K, D, E]: once per K/V head
        return w["W_O"][heads] @ right[kv[heads]]
    if circuit not in ("qk", "qk_pos"):
        raise ValueError(f"circuit={circuit!r} is not one of 'ov', 'qk', 'qk_pos'")
    if circuit == "qk_pos" and "PP" not in model.grams():
        raise ValueError(f"circuit='qk_pos' needs learned positional embeddings; this model has "
                         f"positional={model.cfg.positional!r}")
    mid = model.grams()["EE" if circuit == "qk" else "PP"] if full else None
    left = w["W_K"].mT if mid is None else w["W_K"].mT @ mid  # [K, E, D]
    core = left[kv[heads]] @ w["W_Q"][heads]
    if offset is not None:  # rotary: the core of W_Q R_Δ W_Kᵀ is R_Δ times the offset-0 core (as `circuits`)
        from ..model import rotary

        M = rotary.offset_matrix(model.cfg, offset, layer if model.cfg.rotary_base_sliding is not None else None)
        core = M.to(core.dtype) @ core
    return core


def circuit_cores(model: LazyModel, circuit: str = "ov", full: bool = True, layer: int | None = None,
                  head: int | None = None, offset: int | None = None) -> torch.Tensor:
    """`circuits.circuit_cores`, streamed: `[L, H, E, E]` float32 (or `[E, E]` for one head). Rotary
    models, QK: `offset=Δ` required, as in `circuits`."""
    from .circuits import _check_circuit, check_offset

    _check_circuit(circuit, full)
    if circuit == "ov" and offset is not None:
        raise ValueError("offset= is for QK circuits (circuit='qk'); the OV circuit does not depend on positions")
    if circuit == "qk_pos" and model.cfg.positional == "rotary":
        raise ValueError("circuit='qk_pos' needs learned positional embeddings; this model is rotary: use "
                         "circuit='qk' with offset=Δ")
    offset = check_offset(model, offset, "circuit='qk'") if circuit == "qk" else None
    if (layer is None) != (head is None):
        raise ValueError("give both layer and head, or neither")
    if layer is not None:
        layer, head = check_layer_head(model, layer, head)
        core = _layer_cores(model, layer, circuit, full, offset, torch.tensor([head]))[0]
        return check_finite_output(f"L{layer}H{head}'s {circuit} circuit", core, axes=())
    c = model.cfg
    if full:
        model.grams()
    out = torch.empty(c.n_layers, c.n_heads, c.d_head, c.d_head)
    for l in _bar(range(c.n_layers), f"{circuit.upper()} circuits", c.n_layers, _big(model)):
        out[l] = _layer_cores(model, l, circuit, full, offset)
    return check_finite_output(f"{circuit} circuit", out, axes=("layer", "head"))


# ---------------------------------------------------------------------------------------- rotary offset profile
@torch.no_grad()
def offset_profile(model: LazyModel, offsets: list[int], token_weights: torch.Tensor | None = None) -> torch.Tensor:
    """`circuits.offset_profile`, streamed: `[L, H, n_offsets]` float32 (offsets already checked).

    The mean query and key of every head `[L, H, d_head]` are cached on disk (keyed by the token
    weights' digest), so a new offset range costs nothing. Without q/k norms they are one layer's
    projection of the mean normalised embedding (one vocabulary pass); with q/k norms (which act per
    token) every layer projects every vocabulary block (one vocabulary pass per layer).
    """
    import hashlib

    from .circuits import _normalised_embeddings, _profile_at_offsets, _profile_qk, _token_distribution

    cfg = model.cfg
    dt = torch.float32
    L, H, E, V = cfg.n_layers, cfg.n_heads, cfg.d_head, cfg.d_vocab
    p = _token_distribution(V, token_weights, dt)
    key = "uniform" if token_weights is None else hashlib.sha256(p.numpy().tobytes()).hexdigest()[:16]
    big = _big(model)

    def embedding_blocks():
        for s in range(0, V, model.block_rows):
            rows = slice(s, min(s + model.block_rows, V))
            m = model._convert(None, rows).to(dt)
            yield rows, _normalised_embeddings(m, 0, rows.stop - rows.start, dt)

    def attention(layer: int):  # the layer's raw (unfolded) attention weights, as the forward pass uses them
        return model._convert(layer, slice(0, 1)).to(dt)

    def compute() -> dict[str, torch.Tensor]:
        q_mean, k_mean = torch.zeros(L, H, E), torch.zeros(L, H, E)
        if not cfg.qk_norm:  # q, k linear in the normalised input: project its (weighted) mean
            n_mean = torch.zeros(cfg.d_model)
            for rows, x in _bar(embedding_blocks(), "offset profile: mean embedding",
                                -(-V // model.block_rows), big):
                n_mean += (p[rows, None] * x).sum(0)
            for layer in _bar(range(L), "offset profile: layers", L, big):
                q, k = _profile_qk(attention(layer), 0, n_mean[None], dt)
                q_mean[layer], k_mean[layer] = q[0], k[0]
        else:  # the q/k norms act per token: every layer sees every token
            for layer in _bar(range(L), "offset profile (q/k norms): layers", L, big):
                one = attention(layer)
                for rows, x in embedding_blocks():
                    q, k = _profile_qk(one, 0, x, dt)
                    q_mean[layer] += (p[rows, None, None] * q).sum(0)
                    k_mean[layer] += (p[rows, None, None] * k).sum(0)
        return {"q_mean": q_mean, "k_mean": k_mean}

    means = model.cached(f"offset_profile_means/{key}", compute)
    return torch.stack([_profile_at_offsets(cfg, layer, means["q_mean"][layer], means["k_mean"][layer], offsets)
                        for layer in range(L)])


# ---------------------------------------------------------------------------------------- composition
def _r(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.qr(x, mode="r")[1]


@torch.no_grad()
def _layer_blocks(model: LazyModel, layer: int, kind: str, offset=None) -> dict[str, torch.Tensor]:
    """One layer's composition blocks (see `composition`): left `R_V W_O` `[H, E, D]`; right
    `X[x(h)] T[h]` kept factored as `X [n, D, E]` (n = K/V heads for "k"/"v", H for "q") and
    `T [H, E, E]`, with `xi [H]` the X each head uses."""
    w = model.layer_weights(layer)
    kv = _kv_index(model)
    H = model.cfg.n_heads
    if offset is not None:  # rotary: keys as W_QK(Δ) reads them, W_K M_lᵀ (`circuits.keys_at`)
        from ..model import rotary

        M = rotary.offset_matrix(model.cfg, offset, layer if model.cfg.rotary_base_sliding is not None else None)
        w["W_K"] = w["W_K"] @ M.to(w["W_K"].dtype).mT
    left = _r(w["W_V"])[kv] @ w["W_O"]
    if kind == "k":
        X, T, xi = w["W_K"], _r(w["W_Q"]).mT, kv
    elif kind == "v":
        X, T, xi = w["W_V"], _r(w["W_O"].mT).mT, kv
    else:
        X, T, xi = w["W_Q"], _r(w["W_K"]).mT[kv], torch.arange(H)
    right_norm = torch.linalg.matrix_norm(X[xi] @ T)
    return {"left": left, "X": X, "T": T, "xi": xi, "left_norm": torch.linalg.matrix_norm(left),
            "right_norm": right_norm}


@torch.no_grad()
def composition_scores(model: LazyModel, kind: str = "q", baseline: bool = False, offset=None,
                       max_block_bytes: float = 2**28) -> torch.Tensor:
    """`composition.composition_scores`, streamed: `[L, H, L, H]` float32, NaN where layer1 >= layer2.

    One pass over the layers keeps every layer's right-hand factors `X`, `T` (the K/V heads' `W_K`
    or `W_V` for K- and V-composition, not copied per query head); the earlier layer's left blocks
    are then multiplied with the later layers' `X` in chunks of layers whose product stays under
    `max_block_bytes`, and the per-query-head `T` applied on `E x E` blocks. Rotary models: Q- and
    K-scores at `offset=Δ` (required), as `composition.composition_scores`.
    """
    from .composition import _check_scores, _kind, _offset, composition_baseline

    kind = _kind(kind)
    off = _offset(model, kind, offset)  # rotary Q/K: required, as for an eager model
    c = model.cfg
    L, H, E, D = c.n_layers, c.n_heads, c.d_head, c.d_model
    blocks = [_layer_blocks(model, l, kind, off) for l in _bar(range(L), f"{kind.upper()}-composition: layers", L,
                                                          _big(model))]
    out = torch.full((L, H, L, H), float("nan"))
    n_x = blocks[0]["X"].shape[0]
    pairs = L * (L - 1) // 2
    bar = _bar(None, f"{kind.upper()}-composition: pairs of layers", pairs, _big(model))
    for l1 in range(L - 1):
        lhs = blocks[l1]["left"].reshape(H * E, D)
        per_layer = H * E * (n_x * E + H * E) * 4  # bytes of one later layer's products
        chunk = max(1, int(max_block_bytes // per_layer))
        for s in range(l1 + 1, L, chunk):
            later = list(range(s, min(s + chunk, L)))
            X = torch.cat([blocks[l]["X"] for l in later])  # [n * nx, D, E]
            P = (lhs @ X.permute(1, 0, 2).reshape(D, -1)).view(H, E, len(later), n_x, E)
            for j, l2 in enumerate(later):
                b = blocks[l2]
                # [H1, E, H2, E] @ T[h2] : the later head's own factor, per query head
                prod = P[:, :, j][:, :, b["xi"]].permute(2, 0, 1, 3).reshape(H, H * E, E) @ b["T"]
                num = prod.view(H, H, E, E).square().sum((2, 3)).sqrt().T  # [H1, H2]
                out[l1, :, l2] = num / (blocks[l1]["left_norm"][:, None] * b["right_norm"][None])
            bar.update(len(later))
    bar.close()
    if baseline:
        out = out - composition_baseline(model, kind)[0]
    return _check_scores(f"composition scores ({kind})", out)


# ---------------------------------------------------------------------------------------- skip-trigrams
@torch.no_grad()
def _offset_key(model: LazyModel, offset):
    """The skip-trigram offset (default as `skip_trigrams.default_offset`), checked, and its cache-key text."""
    from .circuits import check_offset
    from .skip_trigrams import default_offset

    if offset is None:
        offset = default_offset(model)
    off = check_offset(model, offset, "skip-trigrams")
    return off, ("" if off is None else f"/offset={off}")


def skip_trigram_factors(model: LazyModel, layer: int, head: int, offset=None) -> dict[str, torch.Tensor]:
    """The head's float32 factors as `skip_trigrams._factors` makes them (`q = W_E W_Q / scale`,
    centred `k = W_E W_K`, `v = W_E W_V`, centred `u = W_O W_U`), from one blockwise pass over the
    vocabulary, cached on disk (4 `[d_vocab, d_head]` float32 matrices per head)."""
    layer, head = check_layer_head(model, layer, head)
    off, key = _offset_key(model, offset)

    def compute() -> dict[str, torch.Tensor]:
        w = model.layer_weights(layer)
        kvh = model.cfg.kv_head_of(head)
        Wq, Wk, Wv, Wo = w["W_Q"][head], w["W_K"][kvh], w["W_V"][kvh], w["W_O"][head]
        if off is not None:  # rotary: keys as W_QK(Δ) reads them (`circuits.keys_at`)
            from ..model import rotary

            M = rotary.offset_matrix(model.cfg, off, layer if model.cfg.rotary_base_sliding is not None else None)
            Wk = Wk @ M.to(Wk.dtype).mT
        V, E = model.cfg.d_vocab, model.cfg.d_head
        q, k, v = (torch.empty(V, E) for _ in range(3))
        u = torch.empty(E, V)
        for rows, W_E, W_U in model.vocab_blocks(desc=f"skip-trigram factors L{layer}H{head}"):
            q[rows], k[rows], v[rows] = W_E @ Wq, W_E @ Wk, W_E @ Wv
            u[:, rows] = Wo @ W_U
        q /= float(model.cfg.attn_scale)
        return {"q": q, "k": k - k.mean(0), "v": v, "u": u - u.mean(1, keepdim=True)}

    return model.cached(f"skip_trigram_factors/{layer}/{head}{key}", compute)


@torch.no_grad()
def skip_trigram_query(model: LazyModel, layer: int, head: int, token: int, n_dest: int = 10,
                       n_out: int = 10, offset=None) -> dict[str, list]:
    """One source token's destinations and outputs (what `SkipTrigramTable.for_source` lists), from the
    head's cached factors only (no strength scan): two GEMVs `[d_vocab, d_head] @ [d_head]`.
    Returns `{"dests", "dest_values", "outs", "out_values"}`."""
    from ._check import check_token

    token = check_token(model, token)
    f = skip_trigram_factors(model, layer, head, offset)
    dv, di = (f["q"] @ f["k"][token]).topk(min(n_dest, model.cfg.d_vocab))
    ov, oi = (f["v"][token] @ f["u"]).topk(min(n_out, model.cfg.d_vocab))
    return {"dests": di.tolist(), "dest_values": dv.tolist(), "outs": oi.tolist(), "out_values": ov.tolist()}


def skip_trigrams(model: LazyModel, layer: int, head: int, k: int = 20, n_dest: int = 10, n_out: int = 10,
                  block_size: int | None = None, col_block: int | None = None, progress: bool | None = None,
                  offset=None):
    """`skip_trigrams.skip_trigrams`, streamed: the head's factors (cached), then the same tiled
    strength scan (its maxima cached on disk as well). `table.for_source(token)` afterwards needs
    two GEMVs on the cached factors."""
    from .skip_trigrams import SkipTrigramTable, source_maxima

    layer, head = check_layer_head(model, layer, head)
    f = skip_trigram_factors(model, layer, head, offset)
    top = model.cached(f"skip_trigram_maxima/{layer}/{head}{_offset_key(model, offset)[1]}",
                       lambda: dict(zip(("top_qk", "top_ov"), source_maxima(f, block_size, col_block, progress))))
    k = min(k, model.cfg.d_vocab)
    return SkipTrigramTable(model, layer, head, f, top["top_qk"], top["top_ov"], k, n_dest, n_out,
                            min(block_size or 256, 256))


# ---------------------------------------------------------------------------------------- virtual weights
def virtual_weights(model: LazyModel, src, dst, order: int | None = 1):
    """`virtual.virtual_weights` between two heads, or a head and the embedding / unembedding, on
    a lazy model: the layers in between are read one at a time (their `sum_h W_V W_O`, d_model^2
    each); embed -> unembed (a `d_vocab^2` product) is refused."""
    from .factored import FactoredMatrix
    from .virtual import VirtualWeights, _position, component

    s, d = component(model, src), component(model, dst)
    if order not in (None, 0, 1):
        raise ValueError(f"order={order!r} must be 1 (first order), 0 (direct only) or None (exact)")
    if s[0] == "embed" and d[0] == "unembed":
        raise ValueError("embed -> unembed on a lazy model: use the Gram-based circuits instead")

    def w_out(c):
        if c[0] == "embed":
            return torch.cat([W_E for _, W_E, _ in model.vocab_blocks()])
        if c[0] == "head":
            return model.layer_weights(c[1])["W_O"][c[2]]
        raise ValueError(f"src={c!r}: a lazy model supports heads and the embedding as sources")

    def w_in(c):
        if c[0] == "unembed":
            return torch.cat([W_U for _, _, W_U in model.vocab_blocks()], dim=1)
        if c[0] == "head":
            w = model.layer_weights(c[1])
            m = c[3].lower()
            return w["W_Q"][c[2]] if m == "q" else w[f"W_{m.upper()}"][model.cfg.kv_head_of(c[2])]
        raise ValueError(f"dst={c!r}: a lazy model supports heads and the unembedding as destinations")

    ps, pd = _position(model, s), _position(model, d)
    if not ps < pd:
        raise ValueError(f"src={s!r} must come strictly before dst={d!r} in the residual stream")
    if order != 0 and not model.cfg.attn_only and any(ps < 2 * l + 2 < pd for l in range(model.cfg.n_layers)):
        raise ValueError("virtual weights through MLP layers are not streamed yet: pass order=0 (direct term) "
                         "or load the model eagerly")
    wo, wi = w_out(s), w_in(d)
    stages = []
    if order != 0:
        for l in range(model.cfg.n_layers):
            if ps < 2 * l + 1 < pd:
                w = model.layer_weights(l)
                kv = _kv_index(model)
                Hh, D, E = w["W_Q"].shape
                Wv = w["W_V"][kv]
                stages.append(Wv.permute(1, 0, 2).reshape(D, Hh * E) @ w["W_O"].reshape(Hh * E, D))
    if not stages:
        fm = FactoredMatrix(wo, wi)
    else:
        eye = torch.eye(model.cfg.d_model)
        if order == 1:
            mid = eye + sum(stages)
        else:
            mid = eye
            for st in stages:
                mid = mid + mid @ st
        fm = FactoredMatrix(wo, mid, wi)
    return VirtualWeights(s, d, order, fm, wo, wi)


def flops_estimate(model: LazyModel) -> dict[str, float]:
    """Multiply-add counts x2 of the streamed passes (for benchmarks): Gram matrices, OV and QK
    positivity of all heads, K-composition of all pairs."""
    c = model.cfg
    L, H, K, D, E, V = c.n_layers, c.n_heads, c.n_kv, c.d_model, c.d_head, c.d_vocab
    pairs = L * (L - 1) / 2
    return {
        "grams": 2 * 2 * V * D * D,
        "ov_positivity": L * (2 * D * D * K * E + 2 * H * E * D * E),
        "qk_positivity": L * (2 * D * D * K * E + 2 * H * E * D * E),
        "k_composition": pairs * (2 * H * E * D * K * E + 2 * H * H * E * E * E) + L * 2 * H * D * E * E,
        "skip_trigram_scan_one_head": 4 * V * V * E,
    }
