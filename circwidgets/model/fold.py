"""LayerNorm folding and centring, so that circuits of LN models read as plain matrices.

After `fold_layernorm`, each LN's weight and bias live in the matrices that read its output
(W_Q, W_K, W_V, W_in, W_U and their biases) and the model's normalization becomes "LNPre"
(centre and divide by the scale only). `center_writing_weights` removes the mean over d_model
from everything written to the residual stream, which LN would remove anyway. Both leave the
logits unchanged. `center_unembed` shifts every logit at a position by the same amount
(log-probabilities unchanged).
"""

from __future__ import annotations

import copy

import torch

from .config import ModelConfig
from .transformer import Transformer


@torch.no_grad()
def fold_layernorm(model: Transformer, center_writing: bool = True, center_unembed: bool = False) -> Transformer:
    """A new model with LN weights folded in (`normalization="LNPre"`); the input is untouched."""
    cfg = model.cfg
    if cfg.normalization is None:
        return copy.deepcopy(model)
    if cfg.normalization == "LN" and cfg.positional == "shortformer":
        # shortformer adds W_pos after ln1, so scaling W_Q/W_K by the LN weight would also
        # rescale the positional term: there is no exact fold.
        raise ValueError("fold_layernorm: LN weights cannot be folded exactly into a shortformer model "
                         "(positions enter after ln1); analyse the unfolded model instead")
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    L, H, E = cfg.n_layers, cfg.n_heads, cfg.d_head
    new_cfg = ModelConfig.from_dict({**cfg.to_dict(), "normalization": "LNPre", "biases": True})
    dev, dt = model.W_E.device, model.W_E.dtype

    def bias(name, shape):
        return sd[name] if name in sd else torch.zeros(shape, device=dev, dtype=dt)

    if cfg.normalization == "LN":
        w1, b1 = sd.pop("ln1_w"), sd.pop("ln1_b")  # [L, D]
        for m in "QKV":
            W = sd[f"W_{m}"]  # [L, H, D, E]
            sd[f"b_{m}"] = bias(f"b_{m}", (L, H, E)) + torch.einsum("ld,lhde->lhe", b1, W)
            sd[f"W_{m}"] = W * w1[:, None, :, None]
        if not cfg.attn_only:
            w2, b2 = sd.pop("ln2_w"), sd.pop("ln2_b")
            sd["b_in"] = bias("b_in", (L, cfg.d_mlp)) + torch.einsum("ld,ldm->lm", b2, sd["W_in"])
            sd["W_in"] = sd["W_in"] * w2[:, :, None]
        wf, bf = sd.pop("ln_final_w"), sd.pop("ln_final_b")
        sd["b_U"] = bias("b_U", (cfg.d_vocab,)) + bf @ sd["W_U"]
        sd["W_U"] = sd["W_U"] * wf[:, None]
    for name, shape in (("b_O", (L, cfg.d_model)), ("b_U", (cfg.d_vocab,)), ("b_Q", (L, H, E)),
                        ("b_K", (L, H, E)), ("b_V", (L, H, E))):
        sd.setdefault(name, torch.zeros(shape, device=dev, dtype=dt))
    if not cfg.attn_only:
        sd.setdefault("b_in", torch.zeros(L, cfg.d_mlp, device=dev, dtype=dt))
        sd.setdefault("b_out", torch.zeros(L, cfg.d_model, device=dev, dtype=dt))
    if center_writing:
        for name in ("W_E", "W_O", "b_O", "W_out", "b_out") + (("W_pos",) if cfg.positional == "standard" else ()):
            if name in sd:
                sd[name] = sd[name] - sd[name].mean(-1, keepdim=True)
    if center_unembed:
        sd["W_U"] = sd["W_U"] - sd["W_U"].mean(-1, keepdim=True)
        sd["b_U"] = sd["b_U"] - sd["b_U"].mean()
    out = Transformer(new_cfg, seed=None).to(device=dev, dtype=dt)
    out.load_state_dict(sd)
    out.tokenizer = model.tokenizer
    return out.eval()
