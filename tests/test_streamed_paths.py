"""Path expansion of models never in memory whole: a lazy checkpoint (frozen activations from the
layer-by-layer forward pass, folded weights read one layer at a time), an nnsight / Hugging Face model
(frozen activations from one trace, weights from the module), and a model dispatched by accelerate over
the CPU and disk (offloaded weights read from accelerate's hooks). Every result is compared with the
engine on the eagerly converted model (float64 for the lazy checkpoints). Pre-norm families (GPT-2,
Llama) and RMS post-norm families (Gemma 2 with its soft-caps and sliding window, OLMo-2 without first
norms, Gemma 3), every parameter random (the norms' weights too)."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

import circwidgets as cw
from circwidgets import engine
from circwidgets.engine import streamed_paths
from circwidgets.engine.paths import frozen_run, logit_paths, path_terms
from circwidgets.model.lazy import LazyModel
from circwidgets.model.lazy_source import LazySource

tf = pytest.importorskip("transformers")
pytestmark = pytest.mark.filterwarnings("ignore:LanguageModel is deprecated")


def _randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # norms around 1, every parameter random (a mapping bug cannot hide)
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if p.ndim == 1 else 0.0))
    return model.eval()


# RMS post-norm families: the attention output and the MLP output normalised before they are added
POST_NORM_COMMON = dict(hidden_size=48, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                        max_position_embeddings=64)


def _hf(kind: str, vocab: int = 97, attn: str = "eager") -> torch.nn.Module:
    if kind == "gemma2":  # window 5 < 9 tokens: the sliding layers matter; both soft-caps on
        return _randomise(tf.Gemma2ForCausalLM(tf.Gemma2Config(
            **POST_NORM_COMMON, vocab_size=vocab, num_key_value_heads=2, head_dim=12, sliding_window=5,
            query_pre_attn_scalar=12, attn_logit_softcapping=3.0, final_logit_softcapping=5.0,
            attn_implementation=attn)), 2)
    if kind == "gemma3_text":
        return _randomise(tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(
            **POST_NORM_COMMON, vocab_size=vocab, num_key_value_heads=1, head_dim=12, sliding_window=5,
            query_pre_attn_scalar=12, sliding_window_pattern=2, attn_implementation=attn)), 4)
    if kind == "olmo2":  # no first norms, q/k norms over all heads
        return _randomise(tf.Olmo2ForCausalLM(tf.Olmo2Config(
            **POST_NORM_COMMON, vocab_size=vocab, num_key_value_heads=2, tie_word_embeddings=False,
            pad_token_id=1, eos_token_id=2, attn_implementation=attn)), 3)
    if kind == "phi3":  # one fused q/k/v projection, grouped K/V, partial rotary
        return _randomise(tf.Phi3ForCausalLM(tf.Phi3Config(
            hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=vocab, max_position_embeddings=64, pad_token_id=0, partial_rotary_factor=0.5,
            attn_implementation=attn)), 5)
    if kind == "gpt_neox":  # LayerNorm, parallel attention and MLP, fused per-head [q | k | v], rotary on a quarter
        return _randomise(tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(
            hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, vocab_size=vocab,
            max_position_embeddings=64, rotary_pct=0.25, attn_implementation=attn)), 6)
    if kind == "llama":
        return _randomise(tf.LlamaForCausalLM(tf.LlamaConfig(
            hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=vocab, max_position_embeddings=64, tie_word_embeddings=False, attn_implementation=attn)), 0)
    return _randomise(tf.GPT2LMHeadModel(tf.GPT2Config(
        n_embd=48, n_layer=3, n_head=4, vocab_size=vocab, n_positions=32, bos_token_id=0, eos_token_id=0,
        attn_implementation=attn)), 1)


TOKS = torch.randint(1, 90, (2, 9), generator=torch.Generator().manual_seed(0))


# ------------------------------------------------------------------ lazy checkpoints
@pytest.fixture(scope="module", params=[("llama", torch.bfloat16), ("gpt2", torch.float32),
                                        ("gemma2", torch.bfloat16), ("olmo2", torch.float32)],
                ids=["llama-bf16", "gpt2-f32", "gemma2-bf16", "olmo2-f32"])
def lazy(request, tmp_path_factory):
    kind, dtype = request.param
    d = tmp_path_factory.mktemp(kind)
    _hf(kind, vocab=131).to(dtype).save_pretrained(d, max_shard_size="40KB")
    return LazyModel(d, cache_dir=tmp_path_factory.mktemp("cache"), block_rows=40)  # several vocabulary blocks


def _eager64(lazy: LazyModel):
    m = lazy.to_transformer(torch.float64)
    m.cfg = lazy.cfg
    return m


def _capped(cfg, logits: torch.Tensor) -> torch.Tensor:
    """The model's output from the logits the terms add up to (a final soft-cap's tanh after them)."""
    return logits if cfg.final_softcap is None else cfg.final_softcap * torch.tanh(logits / cfg.final_softcap)


@pytest.mark.parametrize("top_k", [None, 3])
def test_path_terms_of_a_lazy_model_equal_eager(lazy, top_k):
    """path_terms streamed (float64 forward pass layer by layer) = the eager float64 model's, term by term,
    and the terms add up to the model's logits."""
    eager = _eager64(lazy)
    src = LazySource(lazy, dtype=torch.float64)
    for order in (0, 1, 2):
        got, want = path_terms(src, TOKS, max_order=order, top_k=top_k), path_terms(eager, TOKS, max_order=order,
                                                                                   top_k=top_k)
        assert got.labels_all == want.labels_all and got.orders == want.orders
        torch.testing.assert_close(got.model_logits, want.model_logits, rtol=0, atol=1e-10)
        torch.testing.assert_close(got.total(), got.model_logits, rtol=0, atol=1e-10)
        torch.testing.assert_close(got.logits(), want.logits(), rtol=0, atol=1e-10)
        for pos, tok in ((0, 3), (8, 17)):
            a, b = dict(got.for_token(pos, tok, batch=1)), dict(want.for_token(pos, tok, batch=1))
            assert a.keys() == b.keys() and max(abs(a[k] - b[k]) for k in a) < 1e-10
    assert "BlockUnembed" in repr(got.W_U)  # the unembedding is never held whole
    # the sum of the terms is the model's own output (the eager model's forward pass, after a soft-cap)
    torch.testing.assert_close(_capped(lazy.cfg, got.total()), eager(TOKS), rtol=0, atol=1e-10)
    # float32 (the default dtype): equal to float32 rounding
    f32 = path_terms(lazy, TOKS[:1], max_order=1)
    torch.testing.assert_close(f32.total().double(), path_terms(eager, TOKS[:1], max_order=1).model_logits,
                               rtol=1e-4, atol=1e-4)


def test_logit_paths_of_a_lazy_model_equal_eager(lazy):
    eager = _eager64(lazy)
    src = LazySource(lazy, dtype=torch.float64)
    got_run, want_run = frozen_run(src, TOKS[:1]), frozen_run(eager, TOKS[:1])
    assert got_run.W_V is None and got_run.reader is not None  # no layer's weights kept in the run
    torch.testing.assert_close(got_run.patterns.double(), want_run.patterns.double(), rtol=0, atol=1e-12)
    for order in (0, 1, 2, 3):
        for pos, tok in ((2, 5), (8, 17)):
            a, b = logit_paths(got_run, pos, tok, order), logit_paths(want_run, pos, tok, order)
            assert a.labels == b.labels  # same terms, same order
            assert max(abs(x - y) for x, y in zip(a.values, b.values)) < 1e-10
            assert abs(a.total - a.model_logit) < 1e-10 and abs(a.model_logit - b.model_logit) < 1e-10
    torch.testing.assert_close(got_run.model_logits(4), want_run.model_logits(4), rtol=0, atol=1e-10)


def test_streamed_expansion_holds_one_layer_at_a_time(lazy, monkeypatch):
    """Each layer's folded weights are read once per pass, in order, and freed before the next layer's are
    read (weak references: at most one layer's W_V alive); no eager copy of the model is made."""
    real = streamed_paths.FoldedReader.layer
    alive: list = []
    order: list[int] = []

    def layer(self, l):
        gc.collect()
        assert sum(r() is not None for r in alive) == 0, f"a previous layer's weights are alive at layer {l}"
        out = real(self, l)
        alive.append(weakref.ref(out["W_V"]))
        order.append(l)
        return out

    monkeypatch.setattr(streamed_paths.FoldedReader, "layer", layer)
    monkeypatch.setattr(LazyModel, "to_transformer", lambda *a, **k: pytest.fail("eager copy made"))
    L = lazy.cfg.n_layers
    path_terms(lazy, TOKS, max_order=2)
    assert order == list(range(L))
    run = frozen_run(lazy, TOKS[:1])
    order.clear(), alive.clear()
    lp = logit_paths(run, 8, 5, max_order=2)
    assert order == list(reversed(range(L)))  # logit_paths: one pass, last layer first
    assert abs(lp.total - lp.model_logit) < 1e-4


def test_paths_view_on_a_lazy_model(lazy):
    pytest.importorskip("anywidget")
    eager = lazy.to_transformer(torch.float32)
    eager.cfg = lazy.cfg
    a, b = cw.paths(lazy, TOKS[0], position=6, target=4), cw.paths(eager, TOKS[0], position=6, target=4)
    assert not a.error and not b.error
    assert a.total == pytest.approx(a.model_logit, abs=1e-4)
    assert a.model_logit == pytest.approx(b.model_logit, rel=1e-4, abs=1e-5)
    assert [t["label"] for t in a.terms] == [t["label"] for t in b.terms]
    for x, y in zip(a.terms, b.terms):
        assert x["value"] == pytest.approx(y["value"], rel=1e-3, abs=1e-5)
    a.path = [[0, 1], [2, 3]]  # a virtual head: the two layers' weights
    assert not a.error and a.virtual["heads"] == [[0, 1], [2, 3]]
    a.position = 8
    assert not a.error and a.total == pytest.approx(a.model_logit, abs=1e-4)
    # the default position: where the opening head decides the next token most (it opened at the last position)
    rep = torch.cat([TOKS[0, :5], TOKS[0, :5]])
    a, b = cw.paths(lazy, rep), cw.paths(eager, rep)
    assert not a.error and (a.layer, a.head) == (b.layer, b.head)
    assert a.position == b.position and a.position in engine.induction_positions(rep).tolist()


def test_a_layernorm_post_norm_is_refused_streamed_and_eager(tmp_path, monkeypatch):
    """A LayerNorm post-norm (its centring and bias are no frozen per-position factor) is refused with the
    same message by the eager engine and, before any forward pass, by the streamed one (no Hugging Face
    family has one: a Gemma-2 checkpoint's config is given LayerNorm here)."""
    from circwidgets.model.config import ModelConfig
    from circwidgets.model.testing import random_model

    m = random_model(attn_only=False, normalization="LN", post_norm=True)
    for fn in (lambda: path_terms(m, TOKS[:1, :8] % 13), lambda: frozen_run(m, TOKS[:1, :8] % 13)):
        with pytest.raises(NotImplementedError, match="LayerNorm post-norms .* not supported; RMSNorm post-norms"):
            fn()
    _hf("gemma2").save_pretrained(tmp_path)
    lazy = LazyModel(tmp_path, cache_dir=tmp_path / "cache")
    lazy.cfg = ModelConfig.from_dict({**lazy.cfg.to_dict(), "normalization": "LN"})
    monkeypatch.setattr(LazySource, "forward", lambda *a, **k: pytest.fail("a forward pass before the refusal"))
    for fn in (lambda: path_terms(lazy, TOKS), lambda: frozen_run(lazy, TOKS[:1])):
        with pytest.raises(NotImplementedError, match="LayerNorm post-norms .* not supported; RMSNorm post-norms"):
            fn()


def test_gemma3_lazy_path_terms_equal_eager(tmp_path):
    """Gemma 3 (q/k norms, post-norms, sliding and global layers with two rotary bases), streamed in float64:
    every term equals the eager model's, and the terms add up to its logits."""
    _hf("gemma3_text").to(torch.bfloat16).save_pretrained(tmp_path, max_shard_size="40KB")
    lazy = LazyModel(tmp_path, cache_dir=tmp_path / "cache", block_rows=40)
    assert lazy.cfg.post_norm and lazy.cfg.qk_norm
    eager, src = _eager64(lazy), LazySource(lazy, dtype=torch.float64)
    got, want = path_terms(src, TOKS, max_order=2), path_terms(eager, TOKS, max_order=2)
    assert got.labels_all == want.labels_all
    torch.testing.assert_close(got.logits(), want.logits(), rtol=0, atol=1e-10)
    torch.testing.assert_close(got.total(), eager(TOKS), rtol=0, atol=1e-10)
    a, b = logit_paths(frozen_run(src, TOKS[:1]), 8, 17, 2), logit_paths(frozen_run(eager, TOKS[:1]), 8, 17, 2)
    assert a.labels == b.labels and max(abs(x - y) for x, y in zip(a.values, b.values)) < 1e-10
    assert abs(a.total - a.model_logit) < 1e-10


# ------------------------------------------------------------------ nnsight / Hugging Face models
@pytest.fixture(scope="module", params=["gpt2", "llama", "gemma2", "olmo2", "gemma3_text", "phi3", "gpt_neox"])
def pair(request):
    nnsight = pytest.importorskip("nnsight")
    from circwidgets.model.nnsight_source import _placeholder_tokenizer

    hf = _hf(request.param)
    return nnsight.LanguageModel(hf, tokenizer=_placeholder_tokenizer()), cw.from_hf(hf)


def test_path_terms_through_nnsight_equal_converted(pair):
    lm, ours = pair
    got, want = path_terms(lm, TOKS, max_order=2), path_terms(ours, TOKS, max_order=2)
    assert got.labels_all == want.labels_all
    torch.testing.assert_close(got.model_logits, want.model_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got.total(), got.model_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got.logits(), want.logits(), rtol=1e-4, atol=1e-4)
    with torch.no_grad():  # the terms add up to the HF model's own logits (before a final soft-cap)
        hf_logits = lm._module(TOKS).logits
    torch.testing.assert_close(_capped(ours.cfg, got.total()), hf_logits, rtol=1e-4, atol=1e-4)
    run, ref = frozen_run(lm, TOKS[:1]), frozen_run(ours, TOKS[:1])
    for pos, tok in ((3, 5), (8, 17)):
        a, b = logit_paths(run, pos, tok, 2), logit_paths(ref, pos, tok, 2)
        assert a.labels == b.labels
        assert max(abs(x - y) for x, y in zip(a.values, b.values)) < 1e-4
        assert a.total == pytest.approx(a.model_logit, abs=1e-4)


def test_nnsight_trace_sends_back_only_the_frozen_activations(pair):
    """One trace: per layer the pattern, the first norm's scale ([batch, pos], computed in the trace; none
    in OLMo-2), the attention post-norm's scale (post-norm families, computed in the trace) and the MLP
    output (after its post-norm), plus the final norm's input; nothing else leaves it."""
    from circwidgets.model.nnsight_source import NNsightSource

    lm, ours = pair
    cfg = ours.cfg
    acts = NNsightSource(lm).frozen_activations(TOKS)
    assert set(acts) == {"pattern", "ln1_scale", "post_scale", "mlp_out", "final_resid"}
    L, H, D = cfg.n_layers, cfg.n_heads, cfg.d_model
    assert acts["pattern"].shape == (L, 2, H, 9, 9)
    assert acts["mlp_out"].shape == (L, 2, 9, D) and acts["final_resid"].shape == (2, 9, D)
    assert (acts["ln1_scale"] is None) == (not cfg.pre_norm) and (acts["post_scale"] is None) == (not cfg.post_norm)
    _, cache = ours.run_with_cache(TOKS)
    for l in range(L):
        if cfg.pre_norm:
            assert acts["ln1_scale"].shape == (L, 2, 9)
            torch.testing.assert_close(acts["ln1_scale"][l], cache["scale", l, "ln1"][..., 0], rtol=1e-5, atol=1e-6)
        if cfg.post_norm:
            assert acts["post_scale"].shape == (L, 2, 9)
            torch.testing.assert_close(acts["post_scale"][l], cache[f"blocks.{l}.ln1_post.hook_scale"][..., 0],
                                       rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(acts["mlp_out"][l], cache["mlp_out", l], rtol=1e-4, atol=2e-4)  # float32


def test_remote_switch_reaches_the_path_trace(pair, remote_trace_spy):
    from circwidgets.model.nnsight_source import NNsightSource

    lm, _ = pair
    seen = remote_trace_spy(lm)
    src = NNsightSource(lm, remote=True)
    path_terms(src, TOKS, max_order=1)
    frozen_run(src, TOKS[:1])
    assert seen == [True, True]


def test_path_expansion_through_nnsight_needs_eager_attention():
    nnsight = pytest.importorskip("nnsight")
    from circwidgets.model.nnsight_source import EagerAttentionRequired, _placeholder_tokenizer

    lm = nnsight.LanguageModel(_hf("llama", attn="sdpa"), tokenizer=_placeholder_tokenizer())
    with pytest.raises(EagerAttentionRequired, match="attn_implementation='eager'"):
        path_terms(lm, TOKS)
    with pytest.raises(EagerAttentionRequired, match="attn_implementation='eager'"):
        frozen_run(lm, TOKS[:1])


def test_paths_view_through_nnsight(pair):
    pytest.importorskip("anywidget")
    lm, ours = pair
    a, b = cw.paths(lm, TOKS[0], position=6, target=4), cw.paths(ours, TOKS[0], position=6, target=4)
    assert not a.error and not b.error
    assert a.total == pytest.approx(a.model_logit, abs=1e-4)
    assert a.model_logit == pytest.approx(b.model_logit, rel=1e-4, abs=1e-5)
    assert [t["label"] for t in a.terms] == [t["label"] for t in b.terms]
    rep = torch.cat([TOKS[0, :5], TOKS[0, :5]])
    a, b = cw.paths(lm, rep), cw.paths(ours, rep)  # the default position, as in memory
    assert not a.error and (a.layer, a.head, a.position) == (b.layer, b.head, b.position)


# ------------------------------------------------------------------ accelerate: layers on the CPU and on disk
@pytest.fixture(scope="module", params=["llama", "gpt2"])
def dispatched(request, tmp_path_factory):
    """A model loaded with a `device_map` mixing "cpu" and "disk" (offload_folder): accelerate's hooks, meta
    parameters for the offloaded modules (values in CPU memory / memory-mapped files)."""
    pytest.importorskip("accelerate")
    kind = request.param
    hf = _hf(kind)
    d = tmp_path_factory.mktemp(f"{kind}-ckpt")
    hf.save_pretrained(d)
    if kind == "llama":
        device_map = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
                      "model.layers.2": "disk", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "disk"}
    else:  # GPT-2: tied unembedding (lm_head is wte) on the CPU, two of three blocks on disk
        device_map = {"transformer.wte": "cpu", "transformer.wpe": "cpu", "transformer.h.0": "disk",
                      "transformer.h.1": "cpu", "transformer.h.2": "disk", "transformer.ln_f": "cpu", "lm_head": "cpu"}
    mapped = tf.AutoModelForCausalLM.from_pretrained(d, device_map=device_map, attn_implementation="eager",
                                                     offload_folder=str(tmp_path_factory.mktemp("offload")))
    return kind, mapped, hf


def test_dispatched_model_is_really_offloaded(dispatched):
    from circwidgets.model.hf_weights import is_dispatched

    _, mapped, _ = dispatched
    assert is_dispatched(mapped) and "disk" in set(mapped.hf_device_map.values())
    assert any(p.is_meta for p in mapped.parameters())  # the case under test: weights not in the module


def test_conversion_of_a_dispatched_model(dispatched):
    """cw.from_hf reads offloaded weights from accelerate's hooks: the same parameters (not zeros, not meta)
    and config as the undispatched model; the tie of GPT-2's unembedding is kept."""
    _, mapped, hf = dispatched
    got, want = cw.from_hf(mapped), cw.from_hf(hf)
    assert {k: v for k, v in got.cfg.to_dict().items() if k != "name"} == \
        {k: v for k, v in want.cfg.to_dict().items() if k != "name"}
    for (n, a), (_, b) in zip(got.named_parameters(), want.named_parameters()):
        assert not a.is_meta and (a.abs().sum() > 0 or b.abs().sum() == 0), n  # (b_U: zeros in both)
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=n)


def test_activation_views_of_a_dispatched_model(dispatched):
    """Patterns, ablation, path cuts, direct logit attribution (weights read inside the trace from the
    hooks) and path expansion of the dispatched model equal the undispatched model's."""
    pytest.importorskip("nnsight")
    _, mapped, hf = dispatched
    ours = cw.from_hf(hf)
    t = TOKS[:1]
    torch.testing.assert_close(engine.attention_patterns(mapped, t).pattern, engine.attention_patterns(ours, t).pattern,
                               rtol=1e-4, atol=2e-5)
    got = engine.ablate_heads(mapped, t, [(1, 2)], kind="mean")
    want = engine.ablate_heads(ours, t, [(1, 2)], kind="mean")
    assert got.intervened == pytest.approx(want.intervened, rel=1e-5)
    got, want = engine.ablate_path(mapped, t, (0, 1), (2, 3), kind="k"), engine.ablate_path(ours, t, (0, 1), (2, 3),
                                                                                            kind="k")
    assert got.intervened == pytest.approx(want.intervened, rel=1e-5) and abs(want.delta) > 1e-6
    torch.testing.assert_close(engine.direct_logit_attribution(mapped, t, -1, 5).double(),
                               engine.direct_logit_attribution(hf, t, -1, 5).double(), rtol=1e-4, atol=1e-5)
    a, b = path_terms(mapped, t, max_order=2), path_terms(ours, t, max_order=2)
    assert a.labels_all == b.labels_all
    torch.testing.assert_close(a.logits(), b.logits(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(a.total(), a.model_logits, rtol=1e-4, atol=1e-4)
