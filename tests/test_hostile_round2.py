"""Hostile inputs, round two (issue 14): architecture fields of `ModelConfig`, hook points that name
where an overflow starts on the new architectures, and bounded memory of the path view."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from circwidgets.engine._check import _hook_names, locate_nonfinite
from circwidgets.model import ModelConfig
from circwidgets.model.testing import random_model

BASE = dict(n_layers=2, d_model=16, n_heads=4, d_head=8, d_vocab=20, n_ctx=12)
MLP = dict(attn_only=False, normalization="RMS")


# --------------------------------------------------------------------------- architecture fields
@pytest.mark.parametrize("field, value, extra", [
    ("n_kv_heads", 3, {}), ("n_kv_heads", 0, {}), ("n_kv_heads", 8, {}), ("n_kv_heads", 2.0, {}),
    ("n_kv_heads", True, {}), ("n_kv_heads", "2", {}),
    ("rotary_dim", 3, {"positional": "rotary"}), ("rotary_dim", 10, {"positional": "rotary"}),
    ("rotary_dim", -2, {}), ("rotary_dim", 4.0, {}), ("rotary_dim", 10**30, {}),
    ("rotary_base", float("nan"), {}), ("rotary_base", 0, {}), ("rotary_base", -1e4, {}),
    ("rotary_base", 10**400, {}), ("rotary_base", "1e4", {}), ("rotary_base", None, {}),
    ("rotary_base_sliding", float("inf"), {"sliding_window": 4}),
    ("rotary_layout", "zigzag", {}), ("rotary_layout", ["half"], {}),
    ("rotary_table_dtype", "float16", {}), ("rotary_table_dtype", [], {}),
    ("rope_scaling", {"rope_type": []}, {}), ("rope_scaling", {"rope_type": "dynamic"}, {}), ("rope_scaling", 2.0, {}),
    ("rope_scaling", {"rope_type": "linear", "factor": 10**400}, {}),
    ("rope_scaling", {"rope_type": "linear", "factor": float("nan")}, {}),
    ("gated_mlp", "yes", MLP), ("gated_mlp", 1, MLP), ("gated_mlp", True, {}),
    ("parallel_attn_mlp", None, MLP), ("parallel_attn_mlp", True, {}),
    ("qk_norm", "true", {}), ("qk_norm_scope", "layer", {}), ("qk_norm_scope", {}, {}),
    ("pre_norm", 0, {}), ("pre_norm", False, {}), ("post_norm", "no", {}), ("post_norm", True, {}),
    ("embed_scale", float("nan"), {}), ("embed_scale", 0.0, {}), ("embed_scale", 10**400, {}),
    ("embed_scale", True, {}),
    ("attn_softcap", float("nan"), {}), ("attn_softcap", -50.0, {}), ("attn_softcap", 10**400, {}),
    ("final_softcap", float("-inf"), {}), ("final_softcap", "30", {}),
    ("sliding_window", -1, {}), ("sliding_window", 0, {}), ("sliding_window", 2.5, {}),
    ("sliding_window", 2**70, {}),
    ("sliding_window_layers", [0, 2], {"sliding_window": 4}), ("sliding_window_layers", [0.0], {"sliding_window": 4}),
    ("sliding_window_layers", "01", {"sliding_window": 4}), ("sliding_window_layers", [0], {}),
    ("tied_embeddings", "yes", {}),
])
def test_architecture_field_rejected_naming_it(field, value, extra):
    """Every architecture field: a wrong type or range is a ValueError that names the field (never a
    TypeError/OverflowError from inside the check, never a config that loads)."""
    with pytest.raises(ValueError, match=rf"ModelConfig\.{field}\b"):
        ModelConfig(**{**BASE, **extra, field: value})


def test_architecture_fields_accept_real_values():
    cfg = ModelConfig(**BASE, **MLP, n_kv_heads=2, positional="rotary", rotary_dim=4, rotary_base=5e5,
                      rope_scaling={"rope_type": "linear", "factor": 2}, gated_mlp=True, qk_norm=True,
                      post_norm=True, embed_scale=4.0, attn_softcap=50, final_softcap=30, sliding_window=4,
                      sliding_window_layers=[1], rotary_base_sliding=1e4, tied_embeddings=True)
    assert cfg.kv_group_size == 2 and cfg.attn_softcap == 50.0 and cfg.rope_scaling["factor"] == 2.0
    assert ModelConfig.from_dict(json.loads(cfg.to_json())) == cfg


_ARCH_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 12), st.integers(-2**80, 2**80),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["half", "interleaved", "head", "all", "float32"]),
    st.text(max_size=4), st.lists(st.integers(-1, 3), max_size=3),
    st.fixed_dictionaries({"rope_type": st.one_of(st.sampled_from(["linear", "llama3", "yarn"]), st.lists(st.none())),
                           "factor": st.one_of(st.floats(), st.integers(-2**80, 2**80), st.text(max_size=2))}),
)
_ARCH_FIELDS = ["n_kv_heads", "rotary_dim", "rotary_base", "rotary_layout", "rope_scaling", "rotary_base_sliding",
                "rotary_table_dtype", "gated_mlp", "parallel_attn_mlp", "qk_norm", "qk_norm_scope", "pre_norm",
                "post_norm", "embed_scale", "attn_softcap", "final_softcap", "sliding_window",
                "sliding_window_layers", "tied_embeddings"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.dictionaries(st.sampled_from(_ARCH_FIELDS), _ARCH_VALUES, max_size=4),
       base=st.sampled_from([{}, MLP, {**MLP, "positional": "rotary"}, {"normalization": "LN"}]))
def test_architecture_config_fuzz(changes, base):
    """Random architecture fields: a ValueError naming a field, or a config whose fields are all in
    range (and round-trip through JSON)."""
    try:
        cfg = ModelConfig.from_dict({**BASE, **base, **changes})
    except ValueError as e:
        assert any(f"ModelConfig.{f}" in str(e) for f in _ARCH_FIELDS + list(BASE) + ["d_head"]), str(e)
        return
    assert cfg.n_heads % cfg.n_kv == 0 and 1 <= cfg.n_kv <= cfg.n_heads
    assert cfg.rotary_dims % 2 == 0 or cfg.positional != "rotary"
    assert 1 <= cfg.rotary_dims <= cfg.d_head
    for f in ("rotary_base", "embed_scale", "attn_softcap", "final_softcap", "rotary_base_sliding"):
        v = getattr(cfg, f)
        assert v is None or (type(v) is float and math.isfinite(v) and v > 0), (f, v)
    assert cfg.sliding_window is None or 1 <= cfg.sliding_window <= 2**20
    for f in ("gated_mlp", "parallel_attn_mlp", "qk_norm", "pre_norm", "post_norm", "tied_embeddings"):
        assert type(getattr(cfg, f)) is bool
    assert ModelConfig.from_dict(json.loads(cfg.to_json())) == cfg


# --------------------------------------------------------------------------- where overflows start
def test_hook_names_cover_every_hook_of_every_architecture():
    """`_hook_names` lists every hook point a forward pass runs (so an overflow is located wherever
    it starts), for GPT-2-style and rotary / gated / post-norm / grouped blocks."""
    for extra in ({}, {**MLP, "positional": "rotary", "gated_mlp": True, "post_norm": True, "n_kv_heads": 2,
                       "qk_norm": True}, {**MLP, "normalization": "LN", "parallel_attn_mlp": True}):
        m = random_model(dtype=torch.float32, **BASE, **extra)
        seen: list[str] = []
        hooks = [(n, lambda x, hp, seen=seen: seen.append(hp.name)) for n in _hook_names(m.cfg)]
        m.run_with_hooks(torch.tensor([[1, 2, 3]]), hooks)
        _, cache = m.run_with_cache(torch.tensor([[1, 2, 3]]))
        # hook_result is left out on purpose: hooking it materialises every head's output (z names the head)
        missing = {k for k in cache.keys() if not k.endswith("hook_result")} - set(_hook_names(m.cfg))
        assert not missing, missing
        assert seen == [n for n in _hook_names(m.cfg) if n in seen]  # forward order


@pytest.mark.parametrize("where, expect", [
    ("ln1_post", r"layer 0 \(blocks\.0\.ln1_post\.hook_scale\)"),
    ("rot_q", r"layer 0, head 1 \(blocks\.0\.attn\.hook_rot_q\)"),
    ("pre_linear", r"layer 0 \(blocks\.0\.mlp\.hook_pre_linear\)"),
])
def test_overflow_located_at_new_hook_points(where, expect):
    """An overflow that starts inside a post-norm, a rotary rotation or a gated MLP's linear half is
    named there (before, these hook points were unknown to the search, which missed them)."""
    m = random_model(dtype=torch.float32, **BASE, **MLP, positional="rotary", gated_mlp=True, post_norm=True)
    toks = torch.tensor([[5, 5, 5, 5]])  # rotary, no W_pos: every position reads the same layer-0 input
    assert locate_nonfinite(m, toks) is None
    _, cache = m.run_with_cache(toks)
    with torch.no_grad():
        if where == "ln1_post":  # attention output finite, its square (the post-norm's scale) overflows
            m.W_O[0] *= 1e20
        elif where == "rot_q":  # head 1's q is +-3e38 in every dimension: finite; cos + sin > 1 overflows
            x0 = float(cache["blocks.0.ln1.hook_normalized"][0, 0, 0] / m.ln1_w[0, 0])
            m.ln1_w[0, 0] = 10.0 / x0
            m.W_Q[0, 1] = 0.0
            m.W_Q[0, 1, 0] = 3.0e37
        else:  # the gated MLP's linear half reads x_0 = 10 through a 1e38 weight
            x0 = float(cache["blocks.0.ln2.hook_normalized"][0, 0, 0] / m.ln2_w[0, 0])
            m.ln2_w[0, 0] = 10.0 / x0
            m.W_in[0] = 0.0
            m.W_in[0, 0] = 1e38
    assert all(torch.isfinite(p).all() for p in m.parameters())
    found = locate_nonfinite(m, toks)
    assert found is not None and re.search(expect, found), found


# --------------------------------------------------------------------------- path expansion memory
_ARCHS = [dict(), dict(attn_only=False, normalization="LN", biases=True), dict(attn_only=False, normalization="LN"),
          dict(attn_only=False, normalization="RMS"), dict(n_layers=3, normalization="LN"),
          dict(n_layers=3, normalization="LN", n_heads=4, n_kv_heads=2, biases=True, positional="rotary"),
          dict(normalization="LNPre", biases=True, attn_only=False, parallel_attn_mlp=True, gated_mlp=True,
               act_fn="silu"),
          dict(attn_only=False, normalization="RMS", post_norm=True),
          dict(attn_only=False, normalization="RMS", post_norm=True, pre_norm=False, positional="rotary"),
          dict(attn_only=False, normalization="RMS", embed_scale=4.0, final_softcap=3.0, attn_softcap=5.0,
               qk_norm=True, gated_mlp=True, act_fn="silu", biases=True),
          dict(attn_only=False, normalization="LN", biases=True, tied_embeddings=True)]


@pytest.mark.parametrize("arch", range(len(_ARCHS)))
def test_logit_paths_equal_the_full_expansion(arch):
    """The streamed expansion of one logit (`logit_paths`) has the same terms and values as the full
    `path_terms` tensor expansion, and its total is the model's own logit (float64)."""
    from circwidgets.engine.paths import frozen_run, logit_paths, path_terms

    m = random_model(dtype=torch.float64, **{**dict(n_layers=2, d_model=16, n_heads=3, d_head=4, d_vocab=13,
                                                      n_ctx=10), **_ARCHS[arch]})
    t = torch.tensor([[1, 2, 3, 4, 5, 1, 2, 3]])
    run = frozen_run(m, t)
    for order in (0, 1, 2, 3):
        full = path_terms(m, t, max_order=order)
        assert torch.allclose(full.total(), full.model_logits, atol=1e-9)
        for pos, tok in ((0, 0), (4, 5), (7, 12)):
            lp = logit_paths(run, pos, tok, max_order=order)
            a, b = dict(full.for_token(pos, tok)), dict(lp.for_token())
            assert a.keys() == b.keys()
            assert max(abs(a[k] - b[k]) for k in a) < 1e-9
            assert abs(lp.total - lp.model_logit) < 1e-9 and abs(sum(b.values()) - lp.total) < 1e-9


_RSS_SCRIPT = r"""
import resource, sys, torch, warnings
torch.set_num_threads(1)
warnings.simplefilter("ignore")
from circwidgets.model.testing import random_model
from circwidgets.widgets.paths import PathExpansion
m = random_model(dtype=torch.float32, n_layers=4, d_model=256, n_heads=8, d_head=32, d_vocab=2000, n_ctx=1024,
                 attn_only=False, normalization="LN", biases=True)
toks = torch.randint(0, 2000, (768,), generator=torch.Generator().manual_seed(0))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
w = PathExpansion(m, toks, position=500, max_order=2)
w.position = 767
assert w.error == "", w.error
assert abs(w.total - w.model_logit) < 1e-3 * max(1.0, abs(w.model_logit)), (w.total, w.model_logit)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
"""


def test_paths_view_memory_is_bounded_by_what_is_shown():
    """A paths view with virtual-head terms on a 32-head model at 768 tokens: the old full expansion
    held hundreds of millions of `[terms, pos, d_model]` values (GBs); the streamed one holds the
    patterns (32 x 768^2) and the sources, so the kernel grows by well under 400 MB."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    grew_mb = float(out.stdout.strip().splitlines()[-1])
    assert grew_mb < 400, f"the paths view grew the process by {grew_mb:.0f} MB"
