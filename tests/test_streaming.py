"""Lazy checkpoints (`cw.from_hf(path, lazy=True)`) and the streamed weights-only analyses: equal to
the eager model's results, read one layer at a time, cached on disk (reuse, invalidation,
truncated / corrupted cache files rejected)."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

import circwidgets as cw
from circwidgets import engine
from circwidgets.engine import streaming
from circwidgets.model.lazy import LazyModel

tf = pytest.importorskip("transformers")


def _randomise(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # norms around 1, every parameter random (a mapping bug cannot hide)
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if p.ndim == 1 else 0.0))


def _llama():
    cfg = tf.LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=157, max_position_embeddings=64,
                         tie_word_embeddings=False, attn_implementation="eager")
    m = tf.LlamaForCausalLM(cfg)
    _randomise(m, 0)
    return m


def _gpt2():
    cfg = tf.GPT2Config(n_embd=48, n_layer=3, n_head=4, vocab_size=131, n_positions=32, bos_token_id=0,
                        eos_token_id=0, attn_implementation="eager")
    m = tf.GPT2LMHeadModel(cfg)
    _randomise(m, 1)
    return m


@pytest.fixture(scope="module", params=[("llama", torch.bfloat16), ("gpt2", torch.float32)], ids=["llama-bf16",
                                                                                                   "gpt2-f32"])
def ckpt(request, tmp_path_factory):
    kind, dtype = request.param
    hf = _llama() if kind == "llama" else _gpt2()
    d = tmp_path_factory.mktemp(kind)
    hf.to(dtype).save_pretrained(d, max_shard_size="40KB")
    assert (d / "model.safetensors.index.json").is_file()
    return kind, d, hf


@pytest.fixture()
def lazy(ckpt, tmp_path):
    _, d, _ = ckpt
    return cw.from_hf(str(d), lazy=True, cache_dir=tmp_path / "cache")


def _eager(lazy: LazyModel):
    m = lazy.to_transformer(torch.float32)
    m.cfg = lazy.cfg  # same config object: the same analyses
    return m


def test_lazy_is_the_converter(ckpt, lazy):
    """The lazy model's config and its eager copy are `from_hf` on the HF model: same logits."""
    kind, d, _ = ckpt
    assert len(lazy._shards) > 3  # sharded
    assert lazy.dtype == (torch.bfloat16 if kind == "llama" else torch.float32)
    hf = tf.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
    ref = cw.from_hf(hf)
    assert lazy.cfg == ref.cfg
    toks = torch.randint(0, lazy.cfg.d_vocab, (2, 10), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(lazy.to_transformer(torch.float32)(toks), ref(toks), rtol=1e-5, atol=1e-5)


def test_tensors_are_read_one_layer_at_a_time(lazy):
    """Tensors are read from the files when asked for (stored dtype), embedding rows alone when rows are."""
    name = lazy._embed_key()
    emb = lazy.raw(name)
    assert emb.dtype == lazy.dtype  # stored dtype, no cast
    assert torch.equal(lazy.raw(name, slice(3, 7)), emb[3:7])
    ids = torch.tensor([9, 2, 3, 2, -1])  # unordered, repeated, negative: as tensor indexing
    assert torch.equal(lazy.raw(name, ids), emb[ids])
    with pytest.raises(IndexError, match="out of range"):
        lazy.raw(name, torch.tensor([emb.shape[0]]))
    lazy.reads.clear()
    lazy.layer_weights(1)
    assert lazy.reads and all(".1." in n or "layers" not in n and ".h." not in n for n in lazy.reads), lazy.reads
    assert not any(".mlp." in n for n in lazy.reads)
    assert not any("embed" in n or "wte" in n or "lm_head" in n for n in lazy.reads)


@pytest.mark.parametrize("circuit", ["ov", "qk"])
@pytest.mark.parametrize("full", [True, False])
def test_positivity_and_eigenvalues_equal_eager(lazy, circuit, full):
    lazy.block_rows = 40  # several vocabulary blocks
    eager = _eager(lazy)
    rotary_qk = circuit == "qk" and lazy.cfg.positional == "rotary"
    if rotary_qk:  # the offset is required, as for the eager model
        with pytest.raises(ValueError, match="offset"):
            engine.eigen_positivity(lazy, circuit, full)
    for off in ([0, 3] if rotary_qk else [None]):
        got = engine.eigen_positivity(lazy, circuit, full, offset=off)
        torch.testing.assert_close(got, engine.eigen_positivity(eager, circuit, full, offset=off), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(engine.circuit_cores(lazy, circuit, full, offset=off),
                                   engine.circuit_cores(eager, circuit, full, offset=off), rtol=1e-4, atol=1e-4)
        lam = engine.eigenvalues(lazy, 2, 3, circuit, full, offset=off)
        torch.testing.assert_close(lam, engine.eigenvalues(eager, 2, 3, circuit, full, offset=off), rtol=1e-4,
                                   atol=1e-4)


@pytest.mark.parametrize("kind", ["q", "k", "v"])
def test_composition_equals_eager(lazy, kind):
    eager = _eager(lazy)
    offsets = [0, 2] if lazy.cfg.positional == "rotary" and kind != "v" else [None]
    for off in offsets:
        got = streaming.composition_scores(lazy, kind, offset=off, max_block_bytes=1)  # one later layer per chunk
        torch.testing.assert_close(got, engine.composition_scores(eager, kind, offset=off), rtol=1e-5, atol=1e-6,
                                   equal_nan=True)
        torch.testing.assert_close(engine.composition_scores(lazy, kind, baseline=True, offset=off),
                                   engine.composition_scores(eager, kind, baseline=True, offset=off), rtol=1e-5,
                                   atol=1e-6, equal_nan=True)
        one, want = engine.composition_for_head(lazy, 1, 2, kind, offset=off), engine.composition_for_head(
            eager, 1, 2, kind, offset=off)  # one head's pairs: the streamed scores, sliced
        torch.testing.assert_close(one.into, want.into, rtol=1e-5, atol=1e-6, equal_nan=True)
        torch.testing.assert_close(one.out_of, want.out_of, rtol=1e-5, atol=1e-6, equal_nan=True)


def test_skip_trigrams_equal_eager(lazy):
    lazy.block_rows = 32
    eager = _eager(lazy)
    got, want = engine.skip_trigrams(lazy, 1, 2, k=5), engine.skip_trigrams(eager, 1, 2, k=5)
    torch.testing.assert_close(got.top_qk, want.top_qk, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.top_ov, want.top_ov, rtol=1e-4, atol=1e-5)
    a, b = got.for_source(7), want.for_source(7)
    assert a.dests == b.dests and a.outs == b.outs
    torch.testing.assert_close(torch.tensor(a.out_values), torch.tensor(b.out_values), rtol=1e-4, atol=1e-5)
    q = streaming.skip_trigram_query(lazy, 1, 2, 7)
    assert q["dests"] == b.dests and q["outs"] == b.outs
    # the per-source query runs on the cached factors: a new object with the same cache reads no weights
    again = LazyModel(lazy.path, cache_dir=lazy.cache_dir)
    again.reads.clear()
    assert engine.skip_trigrams(again, 1, 2, k=5).for_source(7).dests == a.dests
    assert again.reads == {}


@pytest.mark.parametrize("pair", [(("head", 0, 1), ("head", 2, 3, "k")), (("head", 0, 1), ("head", 2, 0, "q")),
                                  (("head", 1, 3), ("head", 2, 1, "v")), (("embed",), ("head", 1, 2, "k")),
                                  (("head", 0, 0), ("unembed",)), (("embed",), ("head", 0, 2, "q"))])
@pytest.mark.parametrize("order", [0, 1, None])
def test_virtual_weights_equal_eager(lazy, pair, order):
    # streamed through attention layers only: refused when an MLP sits between (embed -> layer 0 has none)
    if not lazy.cfg.attn_only and order != 0 and pair[1][:2] != ("head", 0):
        with pytest.raises(ValueError, match="MLP"):
            engine.virtual_weights(lazy, *pair, order=order)
        return
    eager = _eager(lazy)
    got, want = engine.virtual_weights(lazy, *pair, order=order), engine.virtual_weights(eager, *pair, order=order)
    torch.testing.assert_close(got.matrix.materialize(), want.matrix.materialize(), rtol=1e-4, atol=1e-5)


def test_qk_composed_through_an_earlier_head_equals_eager(lazy):
    """`k_composition_qk` on a lazy checkpoint raised NotImplementedError ("not streamed"): it is now the
    circuit's `[d_head, d_head]` rotation through the cached Gram matrix `W_Eᵀ W_E`, whose eigenvalues are
    the vocabulary-sized circuit's nonzero ones. Reference: the engine on the in-memory model (itself tested
    against a dense float64 product), every pair of an earlier and a later head."""
    eager = _eager(lazy)
    cfg = lazy.cfg
    off = 2 if cfg.positional == "rotary" else None
    for l1 in range(cfg.n_layers - 1):
        for h1 in range(cfg.n_heads):
            want = engine.k_composition_positivity(eager, (l1, h1), offset=off)
            assert torch.isfinite(want[l1 + 1:]).all() and want[l1 + 1:].abs().max() > 0.05
            torch.testing.assert_close(engine.k_composition_positivity(lazy, (l1, h1), offset=off), want,
                                       rtol=1e-4, atol=1e-5, equal_nan=True)
    got = engine.k_composition_eigenvalues(lazy, (0, 1), (2, 3), offset=off)
    want = engine.k_composition_eigenvalues(eager, (0, 1), (2, 3), offset=off)
    assert got.shape == want.shape == (cfg.d_head,)
    scale = float(want.abs().max())
    torch.testing.assert_close(got.abs(), want.abs(), rtol=1e-4, atol=1e-6 * scale)
    torch.testing.assert_close(got.sum(), want.sum(), rtol=1e-4, atol=1e-6 * scale)  # the trace: real parts too
    with pytest.raises(ValueError, match="earlier layer"):
        engine.k_composition_qk(lazy, (2, 0), (1, 0), offset=off)


def test_gram_cache_reuse_invalidation_and_bad_files(ckpt, tmp_path):
    _, d, _ = ckpt
    cache = tmp_path / "c"
    first = LazyModel(d, cache_dir=cache, block_rows=50)
    g1 = first.grams()
    info = first.cache_info()
    assert info["files"] == 1 and info["bytes"] > g1["EE"].numel() * 4
    emb = first._embed_key()

    second = LazyModel(d, cache_dir=cache)
    torch.testing.assert_close(second.grams()["UE"], g1["UE"], rtol=0, atol=0)
    assert emb not in second.reads  # read back from disk: no vocabulary pass

    path = second.cache_path("grams")
    data = path.read_bytes()
    for bad in (data[: len(data) // 2], data[:-7] + bytes([data[-7] ^ 1]) + data[-6:]):  # truncated, one bit off
        path.write_bytes(bad)
        third = LazyModel(d, cache_dir=cache)
        with pytest.warns(UserWarning, match="cache"):
            g = third.grams()
        assert emb in third.reads  # recomputed, not read back
        torch.testing.assert_close(g["EE"], g1["EE"], rtol=1e-5, atol=1e-5)
        assert second.cache_path("grams").read_bytes() != bad  # and replaced by a valid file

    # a changed checkpoint file (new mtime) is a new key: the old entry is not used
    shard = d / sorted(first._shards)[0]
    st = shard.stat()
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    try:
        fourth = LazyModel(d, cache_dir=cache)
        assert fourth.cache_path("grams") != path
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fourth.grams()
        assert emb in fourth.reads
    finally:
        os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_cache_dir_from_environment(ckpt, tmp_path, monkeypatch):
    _, d, _ = ckpt
    monkeypatch.setenv("CIRCWIDGETS_CACHE", str(tmp_path / "env"))
    lm = cw.from_hf(str(d), lazy=True)
    lm.grams()
    assert lm.cache_info()["dir"] == str(tmp_path / "env") and lm.cache_info()["files"] == 1


def test_lazy_needs_a_directory(ckpt):
    _, _, hf = ckpt
    with pytest.raises(ValueError, match="directory"):
        cw.from_hf(hf, lazy=True)


def test_positional_qk_streamed(lazy):
    eager = _eager(lazy)
    if lazy.cfg.positional != "standard":
        with pytest.raises(ValueError, match="positional"):
            engine.eigen_positivity(lazy, "qk_pos")
        return
    torch.testing.assert_close(engine.eigen_positivity(lazy, "qk_pos"), engine.eigen_positivity(eager, "qk_pos"),
                               rtol=1e-4, atol=1e-4)


def test_weight_views_on_a_lazy_model(lazy):
    """The eigenvalue and skip-trigram views build on a lazy model and show the engine's numbers."""
    pytest.importorskip("anywidget")
    eager = _eager(lazy)
    view = cw.eigenvalues(lazy, layer=1, head=2)
    assert not view.error
    torch.testing.assert_close(view._pos["ov"], engine.eigen_positivity(eager, "ov").float(), rtol=1e-4, atol=1e-4)
    if lazy.cfg.positional == "rotary":  # the offset profile, streamed
        want = cw.eigenvalues(eager, layer=1, head=2).offset_profile(1, 2)
        torch.testing.assert_close(view.offset_profile(1, 2), want, rtol=1e-4, atol=1e-6)
        assert view.profile  # sent to the page
        view.offset = 3
        assert not view.error
        torch.testing.assert_close(view._pos["qk"], engine.eigen_positivity(eager, "qk", offset=3).float(),
                                   rtol=1e-4, atol=1e-4)
    st = cw.skip_trigrams(lazy, layer=1, head=2, k=3)
    assert st.summary()


def _qwen3_ckpt(tmp_path):
    """A Qwen3 (q/k norms, grouped K/V) checkpoint in bfloat16 shards."""
    cfg = tf.Qwen3Config(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=16, vocab_size=101, max_position_embeddings=64,
                         tie_word_embeddings=False, attn_implementation="eager")
    m = tf.Qwen3ForCausalLM(cfg)
    _randomise(m, 2)
    d = tmp_path / "qwen3"
    m.to(torch.bfloat16).save_pretrained(d, max_shard_size="40KB")
    return d


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_offset_profile_streamed(ckpt, tmp_path, family):
    """The rotary offset profile of a lazy model equals the eager model's (uniform and weighted tokens;
    with q/k norms every layer sees every vocabulary block), and its mean q/k are cached on disk."""
    if family == "llama":
        kind, d, _ = ckpt
        if kind != "llama":  # learned positions: refused, as for the eager model
            with pytest.raises(ValueError, match="rotary"):
                engine.circuits.offset_profile(LazyModel(d, cache_dir=tmp_path / "cache"), [0])
            return
    else:
        d = _qwen3_ckpt(tmp_path)
    lazy = LazyModel(d, cache_dir=tmp_path / "cache", block_rows=30)
    eager = _eager(lazy)
    assert lazy.cfg.qk_norm == (family == "qwen3")
    offs = [0, 1, 5, 17]
    got = engine.circuits.offset_profile(lazy, offs)
    torch.testing.assert_close(got, engine.circuits.offset_profile(eager, offs), rtol=1e-4, atol=1e-6)
    w = torch.rand(lazy.cfg.d_vocab, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(engine.circuits.offset_profile(lazy, offs, token_weights=w),
                               engine.circuits.offset_profile(eager, offs, token_weights=w), rtol=1e-4, atol=1e-6)
    assert lazy.cache_info()["files"] == 2  # uniform and weighted means
    again = LazyModel(d, cache_dir=tmp_path / "cache")
    torch.testing.assert_close(engine.circuits.offset_profile(again, range(20))[:, :, offs], got, rtol=1e-5, atol=1e-7)
    assert again.reads == {}  # read back: no weight touched
    with pytest.raises(ValueError, match="token_weights"):
        engine.circuits.offset_profile(lazy, offs, token_weights=-w)


def test_yarn_checkpoint_streamed(tmp_path):
    """A checkpoint declaring YaRN rope scaling, read lazily: its config carries the scaling, QK positivity at an
    offset and the offset profile equal the eager model's (whose forward matches Hugging Face's)."""
    cfg = tf.LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=101, max_position_embeddings=64, tie_word_embeddings=False,
                         attn_implementation="eager", rope_parameters=dict(
                             rope_type="yarn", rope_theta=10000.0, factor=4.0, original_max_position_embeddings=16))
    hf = tf.LlamaForCausalLM(cfg)
    _randomise(hf, 3)
    d = tmp_path / "yarn"
    hf.save_pretrained(d, max_shard_size="40KB")
    lazy = LazyModel(d, cache_dir=tmp_path / "cache", block_rows=30)
    assert lazy.cfg.rope_scaling["rope_type"] == "yarn" and lazy.cfg.rope_scaling["attention_factor"] > 1
    eager = _eager(lazy)
    with torch.no_grad():
        torch.testing.assert_close(eager(TOKS), hf.eval()(TOKS).logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(engine.eigen_positivity(lazy, "qk", offset=3),
                               engine.eigen_positivity(eager, "qk", offset=3), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(engine.circuits.offset_profile(lazy, [0, 1, 7]),
                               engine.circuits.offset_profile(eager, [0, 1, 7]), rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------ activations: the forward pass layer by layer
TOKS = torch.randint(1, 100, (2, 9), generator=torch.Generator().manual_seed(0))


def test_layer_by_layer_forward_equals_eager(lazy):
    """`LazySource`: logits, patterns, z of the eager model of the same checkpoint, one layer in memory."""
    from circwidgets.model.lazy_source import LazySource

    lazy.block_rows = 40  # several unembedding blocks
    eager = _eager(lazy)
    toks = TOKS % lazy.cfg.d_vocab
    src = LazySource(lazy)
    torch.testing.assert_close(src.forward(toks), eager(toks), rtol=1e-5, atol=2e-5)
    _, cache = eager.run_with_cache(toks)
    pats = src.patterns(toks, [0, 2])
    assert sorted(pats) == [0, 2]
    for l in (0, 2):
        torch.testing.assert_close(pats[l], cache["pattern", l], rtol=1e-4, atol=1e-5)
    lazy.reads.clear()
    src.patterns(toks, [0])  # stops after layer 0: later layers are never read
    assert not any(".1." in n or ".2." in n for n in lazy.reads), lazy.reads
    emb = lazy.raw(lazy._embed_key())
    assert emb.shape[0] == lazy.cfg.d_vocab  # (the embedding is gathered by rows, not cast whole)
    _, zs = src.run(toks, save_z=(1,))
    torch.testing.assert_close(zs[1], cache["z", 1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(engine.attention_patterns(lazy, toks[:1]).pattern,
                               engine.attention_patterns(eager, toks[:1]).pattern, rtol=1e-5, atol=1e-6)


def test_activation_engine_on_a_lazy_model(lazy):
    """Ablation (zero and mean), patching, direct logit attribution and head scores of a lazy model
    equal the eager model's."""
    eager = _eager(lazy)
    toks = TOKS % lazy.cfg.d_vocab
    heads = [(0, 1), (2, 3)]
    for kind in ("zero", "mean"):
        got = engine.ablate_heads(lazy, toks, heads, kind=kind)
        want = engine.ablate_heads(eager, toks, heads, kind=kind)
        assert got.clean == pytest.approx(want.clean, rel=1e-5)
        assert got.intervened == pytest.approx(want.intervened, rel=1e-5)
        assert abs(got.delta) > 1e-4
    metric = engine.logit_diff_metric(-1, 5, 7)
    torch.testing.assert_close(engine.patch_heads(lazy, toks[:1], toks[1:], metric=metric),
                               engine.patch_heads(eager, toks[:1], toks[1:], metric=metric), rtol=1e-4, atol=1e-5)
    for pos, token in ((-1, 5), (3, (5, 7))):
        torch.testing.assert_close(engine.direct_logit_attribution(lazy, toks[:1], pos, token),
                                   engine.direct_logit_attribution(eager, toks[:1], pos, token), rtol=1e-4, atol=1e-5)
    got, want = engine.all_head_scores(lazy, n_seqs=2), engine.all_head_scores(eager, n_seqs=2)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("ablation", ["zero", "mean"])
def test_ablate_path_on_a_lazy_model(lazy, ablation):
    """Path cuts in the layer-by-layer forward pass equal the eager model's (grouped K/V notes too)."""
    eager = _eager(lazy)
    toks = TOKS % lazy.cfg.d_vocab
    ref = (TOKS.flip(1) * 3) % lazy.cfg.d_vocab
    for src, dst, kind in (((0, 1), (2, 3), "k"), ((1, 2), (2, 0), "q"), ((0, 3), (1, 1), ("q", "k", "v"))):
        got = engine.ablate_path(lazy, toks, src, dst, kind=kind, ablation=ablation, reference=ref)
        want = engine.ablate_path(eager, toks, src, dst, kind=kind, ablation=ablation, reference=ref)
        assert got.clean == pytest.approx(want.clean, rel=1e-5)
        assert got.intervened == pytest.approx(want.intervened, rel=1e-5)
        assert abs(want.delta) > 1e-5 and got.notes == want.notes


def test_composition_view_on_a_lazy_model(lazy):
    """The composition view: streamed scores, patterns from the layer-by-layer forward pass, the virtual
    head from two layers' weights, all equal to the eager model's view."""
    pytest.importorskip("anywidget")
    eager = _eager(lazy)
    a, b = cw.composition(lazy, kind="k"), cw.composition(eager, kind="k")
    assert not a.error and not b.error
    torch.testing.assert_close(a.score_matrix(), b.score_matrix(), rtol=1e-5, atol=1e-6, equal_nan=True)
    assert a.baseline == pytest.approx(b.baseline, rel=1e-5)
    for v in (a, b):
        v.pair = [0, 1, 2, 3]
    assert not a.error
    assert a.details["raw"] == pytest.approx(b.details["raw"], rel=1e-5)
    for which in ("first", "second", "virtual"):
        torch.testing.assert_close(a.pair_pattern(which), b.pair_pattern(which), rtol=1e-5, atol=1e-6)
    va = engine.virtual_heads(lazy, TOKS % lazy.cfg.d_vocab, (0, 1), (2, 3))
    vb = engine.virtual_heads(eager, TOKS % lazy.cfg.d_vocab, (0, 1), (2, 3))
    torch.testing.assert_close(va.pattern, vb.pattern, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(va.ov.materialize(), vb.ov.materialize(), rtol=1e-5, atol=1e-6)
    a.kind = "v"
    assert not a.error
    assert a.summary().startswith("Composition (V-composition)")


def test_path_expansion_streams_on_a_lazy_model(lazy):
    """Path expansion is no longer refused: it streams (tests/test_streamed_paths.py compares it term by term
    with the eager model in float64); here, its terms add up to the eager model's logits."""
    eager = _eager(lazy)
    toks = TOKS[0] % lazy.cfg.d_vocab
    terms = engine.path_terms(lazy, toks, max_order=1)
    torch.testing.assert_close(terms.total(), eager(toks[None]), rtol=1e-4, atol=1e-4)
    lp = engine.logit_paths(engine.frozen_run(lazy, toks), 5, 3)
    assert lp.total == pytest.approx(lp.model_logit, abs=1e-4)


def test_progress_bars_on_long_passes(lazy, monkeypatch, capsys):
    """Passes over layers / vocabulary blocks show a tqdm bar once the model is big enough to take a while
    (forced here): Gram matrices, circuits, composition, offset profile, the layer-by-layer forward pass."""
    from circwidgets.model import lazy_source

    monkeypatch.setattr(streaming, "_big", lambda model: True)
    monkeypatch.setattr(lazy_source, "_long", lambda cfg: True)
    monkeypatch.setattr(LazyModel, "vocab_blocks", _forced_vocab_blocks(LazyModel.vocab_blocks))
    lazy.block_rows = 40
    lazy.grams()
    engine.eigen_positivity(lazy, "ov")
    streaming.composition_scores(lazy, "v")
    err = capsys.readouterr().err
    assert "Gram matrices" in err and "OV circuits" in err and "V-composition" in err
    engine.attention_patterns(lazy, TOKS[0] % lazy.cfg.d_vocab)
    assert "forward pass, layer by layer" in capsys.readouterr().err
    if lazy.cfg.positional == "rotary":
        engine.circuits.offset_profile(lazy, range(4))
        assert "offset profile" in capsys.readouterr().err


def _forced_vocab_blocks(real):
    def blocks(self, dtype=torch.float32, desc=None):
        from tqdm.auto import tqdm

        items = list(real(self, dtype, None))
        yield from tqdm(items, desc=desc or "vocabulary pass", disable=desc is None, leave=False)
    return blocks


@pytest.mark.parametrize("quantity", ["grams", "offset profile"])
def test_interrupted_pass_leaves_no_cache_entry(lazy, monkeypatch, quantity):
    """Ctrl-C in the middle of a cached pass: no file (complete or partial) is left in the cache
    directory, and the next call computes and stores a valid entry."""
    if quantity == "offset profile" and lazy.cfg.positional != "rotary":
        quantity = "skip-trigram factors"  # learned positions: no offset profile; another cached pass
    lazy.block_rows = 20
    real = LazyModel._convert
    calls = {"n": 0}

    def interrupted(self, layer, rows, mlp=False):
        calls["n"] += 1
        if calls["n"] == 4:  # a few blocks in
            raise KeyboardInterrupt
        return real(self, layer, rows, mlp)

    run = {"grams": lambda m: m.grams(),
           "offset profile": lambda m: engine.circuits.offset_profile(m, range(3)),
           "skip-trigram factors": lambda m: streaming.skip_trigram_factors(m, 1, 2)}[quantity]
    monkeypatch.setattr(LazyModel, "_convert", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(lazy)
    monkeypatch.setattr(LazyModel, "_convert", real)
    cache = lazy.cache_dir
    assert not cache.exists() or list(cache.iterdir()) == []  # no partial or temporary file
    fresh = LazyModel(lazy.path, cache_dir=cache, block_rows=20)
    want = run(fresh)
    assert fresh.cache_info()["files"] == 1
    again = LazyModel(lazy.path, cache_dir=cache)
    got = run(again)
    assert again.reads == {}  # the stored entry is read back whole
    for k in (want if isinstance(want, dict) else {"": want}):
        torch.testing.assert_close(got[k] if k else got, want[k] if k else want, rtol=0, atol=0)


@pytest.mark.parametrize("family", ["gemma2", "olmo2"])
@pytest.mark.parametrize("ablation", ["zero", "mean"])
def test_ablate_path_through_post_norms_on_a_lazy_model(family, ablation, tmp_path):
    """With post-norms (Gemma 2, OLMo-2) a head's write passes the block's frozen RMS scale: the lazy
    forward pass removes the same vector as the eager model (tests/test_engine_interventions.py checks the
    eager cut against a brute-force run)."""
    common = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=101, max_position_embeddings=64, attn_implementation="eager")
    hf = (tf.Gemma2ForCausalLM(tf.Gemma2Config(**common, head_dim=16)) if family == "gemma2"
          else tf.Olmo2ForCausalLM(tf.Olmo2Config(**common)))
    _randomise(hf, 3)
    d = tmp_path / family
    hf.save_pretrained(d, max_shard_size="40KB")
    lazy = cw.from_hf(str(d), lazy=True, cache_dir=tmp_path / "cache")
    assert lazy.cfg.post_norm
    eager = _eager(lazy)
    toks = TOKS % lazy.cfg.d_vocab
    ref = (TOKS.flip(1) * 3) % lazy.cfg.d_vocab
    for src, dst, kind in (((0, 1), (2, 3), "k"), ((1, 2), (2, 0), ("q", "k", "v"))):
        got = engine.ablate_path(lazy, toks, src, dst, kind=kind, ablation=ablation, reference=ref)
        want = engine.ablate_path(eager, toks, src, dst, kind=kind, ablation=ablation, reference=ref)
        assert got.intervened == pytest.approx(want.intervened, rel=1e-5)
        assert abs(want.delta) > 1e-6


def test_skip_trigrams_of_a_lazy_model_refuse_a_vocabulary_subset(lazy):
    """A lazy model ranks the whole vocabulary; `vocab=` is refused, not silently ignored."""
    with pytest.raises(ValueError, match="needs a model in memory"):
        engine.skip_trigrams(lazy, 0, 0, vocab=torch.arange(10))


def _family(family: str):
    """A tiny random HF model of a family whose circuits read more than the pre-norm fold: q/k norm weights
    (Qwen3, Gemma 3, OLMo-2), attention post-norm weights (Gemma 2/3, OLMo-2), Gemma's `embed_scale`."""
    common = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=101, max_position_embeddings=64, attn_implementation="eager")
    gemma = dict(head_dim=16, sliding_window=6)
    m = {"qwen3": lambda: tf.Qwen3ForCausalLM(tf.Qwen3Config(head_dim=16, **common)),
         "gemma2": lambda: tf.Gemma2ForCausalLM(tf.Gemma2Config(**gemma, **common)),
         "gemma3_text": lambda: tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(
             **gemma, layer_types=["sliding_attention", "full_attention", "sliding_attention"], **common)),
         "olmo2": lambda: tf.Olmo2ForCausalLM(tf.Olmo2Config(**common))}[family]()
    _randomise(m, 4)
    return m.eval()


@pytest.mark.parametrize("family", ["qwen3", "gemma2", "gemma3_text", "olmo2"])
def test_streamed_circuits_fold_what_the_eager_ones_fold(family, tmp_path):
    """A lazy checkpoint's layers and vocabulary blocks lacked the eager circuits' folds (`fold.circuit_folds`:
    q/k norm weights into W_Q / W_K, the attention post-norm's weight into W_O, `embed_scale` into W_E): the
    streamed OV / QK circuits, composition scores, virtual weights and skip-trigrams of Qwen3, Gemma 2/3 and
    OLMo-2 were off by up to 16x (full OV of Gemma 2: 143 for 2277). The engine on the converted model is the
    reference."""
    hf = _family(family)
    ours = cw.from_hf(hf)
    hf.save_pretrained(tmp_path / "ckpt")
    lazy = cw.from_hf(str(tmp_path / "ckpt"), lazy=True, cache_dir=tmp_path / "cache")
    lazy.block_rows = 40  # several vocabulary blocks
    checks = {
        "full OV": lambda m: engine.circuit_cores(m, "ov"),
        "QK": lambda m: engine.circuit_cores(m, "qk", full=False, offset=1),
        "full QK positivity": lambda m: engine.eigen_positivity(m, "qk", offset=1),
        "K-composition": lambda m: engine.composition_scores(m, "k", offset=1),
        "virtual embed -> q": lambda m: engine.virtual_weights(m, ("embed",), ("head", 2, 1, "q"), order=0)
        .matrix.materialize(),
        "virtual head -> unembed": lambda m: engine.virtual_weights(m, ("head", 1, 0), ("unembed",), order=0)
        .matrix.materialize(),
        "skip-trigram maxima": lambda m: torch.stack([engine.skip_trigrams(m, 1, 2).top_qk,
                                                      engine.skip_trigrams(m, 1, 2).top_ov]),
        # (the composed QK circuit was refused on a lazy checkpoint: "not streamed")
        "QK composed through L0H1, positivity": lambda m: engine.k_composition_positivity(m, (0, 1), offset=[1, 5]),
        "QK composed through L1H2, |eigenvalues| of L2H3": lambda m: engine.k_composition_eigenvalues(
            m, (1, 2), (2, 3), offset=3).abs(),
    }
    for what, fn in checks.items():
        want = fn(ours)
        atol = 1e-5 * float(want.nan_to_num().abs().max())  # float32 rounding of entries in the thousands
        torch.testing.assert_close(fn(lazy), want, rtol=1e-4, atol=atol, equal_nan=True,
                                   msg=lambda m, what=what: f"{what}: {m}")
