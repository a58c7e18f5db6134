"""Activation views through nnsight: tiny random HF models (GPT-2, Llama with grouped-query attention)
wrapped in an nnsight `LanguageModel` give the same patterns, ablation effects, patching results and
direct logit attributions as circwidgets' own engine on the converted model."""

from __future__ import annotations

import pytest
import torch

import circwidgets as cw
from circwidgets import engine
from circwidgets.model.nnsight_source import EagerAttentionRequired, NNsightSource, TransformerSource

tf = pytest.importorskip("transformers")
nnsight = pytest.importorskip("nnsight")
pytestmark = pytest.mark.filterwarnings("ignore:LanguageModel is deprecated")


def _tokenizer(n: int):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(n - 1)}
    vocab["[UNK]"] = n - 1
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return tf.PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[UNK]")


def _hf(kind: str, attn: str = "eager"):
    g = torch.Generator().manual_seed(3)
    if kind == "llama":
        m = tf.LlamaForCausalLM(tf.LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                                               num_attention_heads=4, num_key_value_heads=2, vocab_size=97,
                                               max_position_embeddings=64, attn_implementation=attn))
    else:
        m = tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=48, n_layer=3, n_head=4, vocab_size=97, n_positions=32,
                                             bos_token_id=0, eos_token_id=0, attn_implementation=attn))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if p.ndim == 1 else 0.0))
    return m.eval()


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def pair(request):
    hf = _hf(request.param)
    ours = cw.from_hf(hf)
    lm = nnsight.LanguageModel(hf, tokenizer=_tokenizer(97))
    return request.param, lm, ours


TOKS = torch.randint(1, 97, (1, 11), generator=torch.Generator().manual_seed(0))
CORRUPT = torch.randint(1, 97, (1, 11), generator=torch.Generator().manual_seed(1))


def test_patterns_equal(pair):
    _, lm, ours = pair
    want = engine.attention_patterns(ours, TOKS)
    ref = want.pattern
    got = engine.attention_patterns(lm, TOKS)
    torch.testing.assert_close(got.pattern, ref, rtol=1e-4, atol=2e-5)
    torch.testing.assert_close(got.v_norm, want.v_norm, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(engine.activations.head_pattern(lm, TOKS, 2, 1), ref[2, 1], rtol=1e-4, atol=2e-5)


def test_only_the_asked_layer_leaves_the_trace(pair):
    _, lm, _ = pair
    out = NNsightSource(lm).patterns(TOKS, [1])
    assert list(out) == [1] and out[1].shape == (1, 4, 11, 11)


def test_ablation_equal(pair):
    _, lm, ours = pair
    heads = [(0, 1), (2, 3)]
    got, want = engine.ablate_heads(lm, TOKS, heads), engine.ablate_heads(ours, TOKS, heads)
    assert got.clean == pytest.approx(want.clean, rel=1e-5)
    assert got.intervened == pytest.approx(want.intervened, rel=1e-5)
    assert abs(got.delta) > 1e-4  # the edit did something


def test_patching_equal(pair):
    _, lm, ours = pair
    metric = engine.logit_diff_metric(-1, 5, 7)
    got = engine.patch_heads(lm, TOKS, CORRUPT, metric=metric)
    want = engine.patch_heads(ours, TOKS, CORRUPT, metric=metric)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    got_n = engine.patch_heads(lm, TOKS, CORRUPT, metric=metric, normalize=True)
    torch.testing.assert_close(got_n, engine.patch_heads(ours, TOKS, CORRUPT, metric=metric, normalize=True),
                               rtol=1e-4, atol=1e-4)


def test_transformer_source_is_the_same_interface(pair):
    _, lm, ours = pair
    a, b = TransformerSource(ours), NNsightSource(lm)
    torch.testing.assert_close(a.patterns(TOKS, [0])[0], b.patterns(TOKS, [0])[0], rtol=1e-4, atol=2e-5)
    va, za = a.run(TOKS, save_z=(1,), metric=engine.loss_metric)
    vb, zb = b.run(TOKS, save_z=(1,), metric=engine.loss_metric)
    assert va == pytest.approx(vb, rel=1e-5)
    torch.testing.assert_close(za[1], zb[1], rtol=1e-4, atol=5e-5)


def _dla_brute(ours, toks, pos, token):
    """Each head's write at `pos` through the frozen final norm (and its weight) onto W_U[:, token]."""
    _, cache = ours.run_with_cache(toks)
    L = ours.cfg.n_layers
    resid = cache["resid_post", L - 1][0, pos].double()
    lnc = ours.cfg.normalization in ("LN", "LNPre")
    r = resid - resid.mean() if lnc else resid
    scale = (r.pow(2).mean() + ours.cfg.ln_eps).sqrt()
    u = ours.W_U[:, token].double() * ours.ln_final_w.double()
    out = torch.empty(L, ours.cfg.n_heads, dtype=torch.float64)
    for l in range(L):
        x = cache["result", l][0, pos].double()
        if lnc:
            x = x - x.mean(-1, keepdim=True)
        out[l] = (x / scale) @ u
    return out


def test_direct_logit_attribution_equal(pair):
    kind, lm, ours = pair
    got = engine.direct_logit_attribution(lm, TOKS, -1, 5)
    torch.testing.assert_close(got.double(), _dla_brute(ours, TOKS, 10, 5), rtol=1e-4, atol=1e-5)
    if kind == "gpt2":  # LayerNorm: the engine's own DLA computes the same quantity
        torch.testing.assert_close(got, engine.direct_logit_attribution(ours, TOKS, -1, 5), rtol=1e-4, atol=1e-5)


def test_sdpa_is_refused_with_the_switch():
    lm = nnsight.LanguageModel(_hf("llama", attn="sdpa"), tokenizer=_tokenizer(97))
    with pytest.raises(EagerAttentionRequired, match="attn_implementation='eager'"):
        engine.attention_patterns(lm, TOKS)


def test_remote_switch_reaches_every_trace(pair, remote_trace_spy):
    """No nnsight server can run here (`nnsight-serve` needs vLLM): check that remote=True is passed to
    each trace, with everything before the request done."""
    _, lm, _ = pair
    seen = remote_trace_spy(lm)
    src = NNsightSource(lm, remote=True)
    engine.activations.head_pattern(src, TOKS, 1, 0)
    engine.activations.ablate_heads(src, TOKS, [(0, 0)])
    engine.activations.direct_logit_attribution(src, TOKS, -1, 3)
    n = len(seen)
    engine.ablate_heads(src, TOKS, [(1, 2)], kind="mean")  # reference z; clean and ablated as copies in one
    engine.head_scores(src, "induction", seq_len=5, n_seqs=1)
    engine.ablate_path(src, TOKS, (0, 1), (1, 2), kind="k", ablation="mean")  # reference z, clean, cut
    assert len(seen) == n + 6 and all(r is True for r in seen)
    engine.attention_patterns(src, TOKS)  # patterns and value norms: one trace
    engine.ablated_run(src, TOKS, heads=[(1, 2)], paths=[(0, 1, 1, 2, "k")], kind="mean")  # reference z, the state
    assert len(seen) == n + 6 + 1 + 2
    n = len(seen)
    # the clean stream, then every (layer, position) run as copies of the batch in one trace
    engine.patch_residual(src, TOKS[:, :3], CORRUPT[:, :3])
    engine.ablation_table(src, TOKS, kind="mean")  # reference z, clean, every head's run in one trace
    engine.patch_heads(src, TOKS, CORRUPT)  # clean z, every head's patched run in one trace
    assert len(seen) == n + 2 + 3 + 2 and all(r is True for r in seen)
    n = len(seen)
    engine.patching_report(src, TOKS, CORRUPT)  # two rows (the metric and its ends), clean z, clean stream, copies
    assert len(seen) == n + 4 + 2
    n = len(seen)
    # `max_elements` bounds the copies a trace holds: one logits table each, one trace per run (as before)
    L, H = src.cfg.n_layers, src.cfg.n_heads
    engine.patch_residual(src, TOKS[:, :3], CORRUPT[:, :3], max_elements=1)
    engine.ablation_table(src, TOKS, max_elements=1)  # clean, one per head
    per_copy = TOKS.numel() * max(src.cfg.d_vocab, 4 * src.cfg.d_model, 4 * 11)  # (interventions._copies_per_run)
    engine.patch_heads(src, TOKS, CORRUPT, max_elements=3 * per_copy)  # clean z, three heads a trace
    assert len(seen) == n + (1 + 3 * L) + (1 + L * H) + (1 + L * H // 3)
    n = len(seen)
    for run in (lambda: engine.ablation_table(src, TOKS, kind="mean", max_elements=0),
                lambda: engine.patch_heads(src, TOKS, CORRUPT, max_elements=float("nan")),
                lambda: engine.patching_report(src, TOKS, CORRUPT, max_elements=-1)):
        with pytest.raises(ValueError, match="max_elements="):
            run()
    assert len(seen) == n  # refused before any request


def test_hf_model_with_device_map_is_a_source(tmp_path):
    """A model loaded with a per-module `device_map` works as a source. Only a CPU is here: transformers
    then places every module on it without accelerate's dispatch hooks, so the multi-GPU case itself
    (activations crossing devices inside the trace) is not exercised."""
    pytest.importorskip("accelerate")
    hf = _hf("llama")
    hf.save_pretrained(tmp_path)
    device_map = {"model.embed_tokens": "cpu", "model.layers": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu",
                  "lm_head": "cpu"}
    mapped = tf.AutoModelForCausalLM.from_pretrained(tmp_path, device_map=device_map, attn_implementation="eager")
    ours = cw.from_hf(hf)
    torch.testing.assert_close(engine.attention_patterns(mapped, TOKS).pattern,
                               engine.attention_patterns(ours, TOKS).pattern, rtol=1e-4, atol=2e-5)


def test_weight_views_of_the_same_object(pair, tmp_path):
    """Weight analyses of an nnsight model read its weights: converted when in memory, streamed from the
    checkpoint directory (a `LazyModel`) when it was loaded from one."""
    from circwidgets.engine import streaming
    from circwidgets.model.lazy import LazyModel

    _, lm, ours = pair
    torch.testing.assert_close(engine.eigen_positivity(lm, "ov"), engine.eigen_positivity(ours, "ov"),
                               rtol=1e-4, atol=1e-4)
    lm._module.save_pretrained(tmp_path)
    loaded = nnsight.LanguageModel(tf.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager"),
                                   tokenizer=_tokenizer(97))
    assert isinstance(streaming.resolve(loaded), LazyModel)
    torch.testing.assert_close(engine.composition_scores(loaded, "v"), engine.composition_scores(ours, "v"),
                               rtol=1e-4, atol=1e-5, equal_nan=True)


@pytest.mark.parametrize("means", ["positions", "batch"])
def test_mean_ablation_equal(pair, means):
    """Mean ablation through nnsight: the reference's z comes back from one trace, the means are taken as
    the engine takes them, and the ablated run equals the engine's on the converted model."""
    _, lm, ours = pair
    heads = [(0, 1), (2, 3), (2, 0)]
    ref = torch.randint(1, 97, (3, 11), generator=torch.Generator().manual_seed(5))
    got = engine.ablate_heads(lm, TOKS, heads, kind="mean", reference=ref, means=means)
    want = engine.ablate_heads(ours, TOKS, heads, kind="mean", reference=ref, means=means)
    assert got.clean == pytest.approx(want.clean, rel=1e-5)
    assert got.intervened == pytest.approx(want.intervened, rel=1e-5)
    zero = engine.ablate_heads(ours, TOKS, heads)
    assert abs(want.intervened - zero.intervened) > 1e-4  # mean is not zero ablation
    # default reference: the tokens themselves
    own = engine.ablate_heads(lm, TOKS, heads, kind="mean")
    assert own.intervened == pytest.approx(engine.ablate_heads(ours, TOKS, heads, kind="mean").intervened, rel=1e-5)
    with pytest.raises(ValueError, match="means"):
        engine.ablate_heads(lm, TOKS, heads, kind="mean", means="tokens")


def test_head_scores_equal(pair):
    """Induction / previous-token / duplicate-token scores on repeated tokens, patterns through nnsight."""
    _, lm, ours = pair
    got = engine.all_head_scores(lm, n_seqs=2)
    want = engine.all_head_scores(ours, n_seqs=2)
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(engine.head_scores(lm, "induction", seq_len=7, n_seqs=3),
                               engine.head_scores(ours, "induction", seq_len=7, n_seqs=3), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["q", "k", "v", ("q", "k", "v")])
@pytest.mark.parametrize("ablation", ["zero", "mean"])
def test_ablate_path_equal(pair, kind, ablation):
    """A path cut inside the nnsight trace (dst's q/k/v recomputed from the residual minus src's write,
    through the first norm) equals the engine's cut on the converted model; grouped K/V notes too."""
    _, lm, ours = pair
    ref = torch.randint(1, 97, (2, 11), generator=torch.Generator().manual_seed(7))
    for src, dst in (((0, 1), (2, 3)), ((1, 2), (2, 0))):
        got = engine.ablate_path(lm, TOKS, src, dst, kind=kind, ablation=ablation, reference=ref)
        want = engine.ablate_path(ours, TOKS, src, dst, kind=kind, ablation=ablation, reference=ref)
        assert got.clean == pytest.approx(want.clean, rel=1e-5)
        assert got.intervened == pytest.approx(want.intervened, rel=1e-5, abs=1e-6)
        assert abs(want.delta) > 1e-5  # the cut did something
        assert got.notes == want.notes


def test_ablate_path_refusals(pair):
    _, lm, _ = pair
    with pytest.raises(ValueError, match="earlier layer"):
        engine.ablate_path(lm, TOKS, (2, 0), (1, 0))
    with pytest.raises(ValueError, match="kind"):
        engine.ablate_path(lm, TOKS, (0, 0), (1, 0), kind="x")


def _hf_family(kind: str):
    """A tiny random HF model of a family whose norms differ from GPT-2's / Llama's: RMS post-norms (Gemma 2,
    OLMo-2; Gemma's norms multiply by 1 + w), a LayerNorm NeoX (Pythia) and Phi-3's fused projections."""
    common = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, vocab_size=97,
                  max_position_embeddings=64, attn_implementation="eager")
    g = torch.Generator().manual_seed(3)
    m = {"gemma2": lambda: tf.Gemma2ForCausalLM(tf.Gemma2Config(num_key_value_heads=2, head_dim=16, **common)),
         "gemma3_text": lambda: tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(
             num_key_value_heads=2, head_dim=16, sliding_window=6, layer_types=["sliding_attention", "full_attention"],
             **common)),
         "olmo2": lambda: tf.Olmo2ForCausalLM(tf.Olmo2Config(num_key_value_heads=2, **common)),
         "phi3": lambda: tf.Phi3ForCausalLM(tf.Phi3Config(num_key_value_heads=2, pad_token_id=0, **common)),
         "gpt_neox": lambda: tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(**common))}[kind]()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if p.ndim == 1 else 0.0))
    return m.eval()


@pytest.mark.parametrize("kind", ["gemma2", "gemma3_text", "olmo2", "phi3", "gpt_neox", "gpt2", "llama"])
def test_value_norms_through_nnsight_and_lazily_are_the_engines_in_every_projection_layout(kind, tmp_path):
    """The value-weighted pattern of an nnsight model or a lazy checkpoint was refused (no value norms came back:
    NaN). ‖v‖ per head and key now leaves the trace (taken on each family's value columns: GPT-2's and Pythia's
    fused projections, Phi-3's, OLMo-2's and the grouped K/V heads repeated over their query heads) and the lazy
    pass: the engine's own on the converted model."""
    hf = _hf_family(kind) if kind in ("gemma2", "gemma3_text", "olmo2", "phi3", "gpt_neox") else _hf(kind)
    ours = cw.from_hf(hf)
    lm = nnsight.LanguageModel(hf, tokenizer=_tokenizer(97))
    hf.save_pretrained(tmp_path / "ckpt")
    lazy = cw.from_hf(tmp_path / "ckpt", lazy=True, cache_dir=tmp_path / "cache")
    toks = torch.tensor([[1, 5, 9, 3, 5, 9, 3, 7, 2, 8]])
    want = engine.attention_patterns(ours, toks)
    heads = want.v_norm.shape[1]
    # the heads' norms differ (a layout read at the wrong columns, or K/V heads repeated in the wrong order, fails)
    assert (want.v_norm[:, 1:] - want.v_norm[:, :-1]).abs().amax() > 0.1 and heads == hf.config.num_attention_heads
    for source in (lm, lazy):
        got = engine.attention_patterns(source, toks)
        torch.testing.assert_close(got.pattern, want.pattern.float(), rtol=1e-4, atol=2e-5)
        torch.testing.assert_close(got.v_norm, want.v_norm.float(), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got.head(1, heads - 1, value_weighted=True),
                                   want.head(1, heads - 1, value_weighted=True).float(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["gpt2", "llama", "gemma2", "olmo2", "phi3", "gpt_neox"])
def test_ablation_state_runs_through_nnsight_and_lazily_as_the_engines(kind, tmp_path, monkeypatch):
    """`ablated_run` (the ablation view's run: heads off and paths cut together, the per-token loss and the top
    predictions) refused a lazy checkpoint and an nnsight model ("needs the model in memory"). It is one pass
    (one trace) with the z edits and the cuts, the compact run computed next to the model; `ablation_table` one
    pass per head. Reference: the engine on the converted model, zero and mean (means over a reference batch)."""
    from circwidgets.engine.ablation_state import ablated_run

    hf = _hf_family(kind) if kind in ("gemma2", "olmo2", "phi3", "gpt_neox") else _hf(kind)
    ours = cw.from_hf(hf)
    lm = nnsight.LanguageModel(hf, tokenizer=_tokenizer(97))
    hf.save_pretrained(tmp_path / "ckpt")
    lazy = cw.from_hf(tmp_path / "ckpt", lazy=True, cache_dir=tmp_path / "cache")
    toks = torch.tensor([[1, 5, 9, 3, 5, 9, 3, 7, 2, 8]])
    ref = torch.tensor([[4, 6, 8, 1, 3, 5, 7, 9, 2, 8], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]])
    clean = ablated_run(ours, toks)
    for ablation in ("zero", "mean"):
        # two heads off (one of them also a cut's source) and three cuts, one of each kind
        state = dict(heads=[(0, 1), (1, 2)], paths=[(0, 3, 1, 0, "k"), (0, 1, 1, 3, "v"), (0, 3, 1, 1, "q")],
                     kind=ablation, reference=ref)
        want = ablated_run(ours, toks, keep_logits=False, **state)
        assert abs(want.loss - clean.loss) > 0.01  # the state changes the run
        for model in (lm, lazy):
            got = ablated_run(model, toks, **state)
            assert got.logits is None and got.notes == want.notes
            torch.testing.assert_close(got.token_loss, want.token_loss, rtol=1e-4, atol=2e-5)
            torch.testing.assert_close(got.top_probs, want.top_probs, rtol=1e-4, atol=1e-5)
            assert torch.equal(got.top_ids, want.top_ids)
            torch.testing.assert_close(torch.tensor(got.top(4, 3)), torch.tensor(want.top(4, 3)), rtol=1e-4,
                                       atol=1e-5)
        table = engine.ablation_table(ours, toks, kind=ablation, reference=ref)
        for model in (lm, lazy):
            torch.testing.assert_close(engine.ablation_table(model, toks, kind=ablation, reference=ref), table,
                                       rtol=1e-4, atol=2e-5)
    # mean ablation reads the reference once, for the heads' z and the cuts' sources' writes together
    from circwidgets.model.lazy_source import LazySource

    passes, real = [], LazySource.forward
    monkeypatch.setattr(LazySource, "forward", lambda self, *a, **k: passes.append(a[0]) or real(self, *a, **k))
    ablated_run(lazy, toks, **state)
    assert len(passes) == 2 and torch.equal(passes[0], ref)  # the reference, then the run
    # nothing off: the model's own run (and Hugging Face's own loss)
    got = ablated_run(lm, toks)
    torch.testing.assert_close(got.token_loss, clean.token_loss, rtol=1e-4, atol=2e-5)
    hf_loss = float(hf(toks, labels=toks).loss)
    assert got.loss == pytest.approx(hf_loss, rel=1e-4)


@pytest.mark.parametrize("kind", ["gpt2", "llama", "gemma2", "gpt_neox"])
def test_patching_report_through_nnsight_and_lazily_is_the_engines(kind, tmp_path):
    """`patching_report` (the ablation view's patching mode: every head and every residual position patched
    from the clean run into the corrupted one, the metric chosen from the two runs) and `patch_residual`
    raised on a lazy checkpoint / nnsight model (no source path). The residual entering each layer is
    read and replaced in the pass (the decoder layer's input; a lazy layer's `hook_resid_pre`)."""
    from circwidgets.model.nnsight_source import as_source

    hf = _hf_family(kind) if kind in ("gemma2", "gpt_neox") else _hf(kind)
    ours = cw.from_hf(hf)
    lm = nnsight.LanguageModel(hf, tokenizer=_tokenizer(97))
    hf.save_pretrained(tmp_path / "ckpt")
    lazy = cw.from_hf(tmp_path / "ckpt", lazy=True, cache_dir=tmp_path / "cache")
    clean, corrupt = torch.tensor([[1, 5, 9, 3, 5, 9, 3, 7]]), torch.tensor([[1, 5, 9, 3, 6, 9, 3, 7]])
    want = engine.patching_report(ours, clean, corrupt)
    assert want.normalized and want.resid.abs().max() > 0.5
    _, cache = ours.run_with_cache(clean)
    for model in (lm, lazy):
        resid = as_source(model).resid_pre(clean)
        for layer in range(ours.cfg.n_layers):
            ref = cache["resid_pre", layer].float()
            torch.testing.assert_close(resid[layer].float(), ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
        got = engine.patching_report(model, clean, corrupt)
        assert (got.good, got.bad, got.pos, got.normalized) == (want.good, want.bad, want.pos, want.normalized)
        assert (got.clean, got.corrupted) == pytest.approx((want.clean, want.corrupted), rel=1e-4, abs=1e-5)
        for part in ("heads", "resid"):  # (fractions restored: a small clean - corrupted gap magnifies rounding)
            torch.testing.assert_close(getattr(got, part), getattr(want, part), rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(engine.patch_residual(lazy, clean, corrupt), engine.patch_residual(ours, clean, corrupt),
                               rtol=1e-4, atol=1e-5)
    # the patched runs go through as copies of the batch: a lazy checkpoint reads its layers once a pass, not
    # once per head and per (layer, position); one copy a pass gives the same numbers
    from circwidgets.model.lazy_source import LazySource

    passes, real = [], LazySource.forward
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(LazySource, "forward", lambda self, *a, **k: passes.append(a[0].shape[0]) or real(self, *a, **k))
        got = engine.patching_report(lazy, clean, corrupt)
        # the metric's choice and its clean and corrupted values (2 runs); heads: the clean z, the 12 patched
        # copies; the residual stream: the clean stream, its 24 (layer, position) copies
        L, H, P = ours.cfg.n_layers, ours.cfg.n_heads, clean.shape[1]
        assert sorted(passes) == [1] * 4 + [L * H, L * P]
        passes.clear()
        one = engine.patching_report(lazy, clean, corrupt, max_elements=1)
        assert len(passes) == 4 + L * H + L * P and set(passes) == {1}
    for part in ("heads", "resid"):
        torch.testing.assert_close(getattr(one, part), getattr(got, part), rtol=1e-3, atol=1e-4)  # (fractions, float32)


@pytest.mark.parametrize("kind", ["gemma2", "olmo2", "phi3", "gpt_neox"])
def test_direct_logit_attribution_through_nnsight_and_lazily_matches_the_engine_in_every_family(kind, tmp_path):
    """Through nnsight and from a lazy checkpoint, Gemma 2 and OLMo-2 heads were attributed without their
    attention post-norm (and through nnsight Gemma's final norm by w instead of 1 + w): off by 2-9 on logits of
    size ~1-2; through nnsight Pythia raised AttributeError (its head is `lm_head` in this transformers, not
    `embed_out`). The engine's own attribution on the converted model (whose parts sum to the logit) is the
    reference."""
    hf = _hf_family(kind)
    ours = cw.from_hf(hf)
    lm = nnsight.LanguageModel(hf, tokenizer=_tokenizer(97))
    hf.save_pretrained(tmp_path / "ckpt")
    lazy = cw.from_hf(tmp_path / "ckpt", lazy=True, cache_dir=tmp_path / "cache")
    toks = torch.tensor([[1, 5, 9, 3, 5, 9, 3, 7, 2, 8]])
    for pos, token in ((-1, 5), (4, (7, 2))):
        want = engine.direct_logit_attribution(ours, toks, pos, token)
        assert want.abs().max() > 0.1
        torch.testing.assert_close(engine.direct_logit_attribution(lm, toks, pos, token), want, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(engine.direct_logit_attribution(lazy, toks, pos, token), want, rtol=1e-4, atol=1e-5)


def test_direct_logit_attribution_of_our_own_source_is_the_engines():
    """`engine.activations.direct_logit_attribution` on our `Transformer` (or its `TransformerSource`) raised
    AttributeError: the hook source has no trace to compute it in; it is the engine's exact attribution."""
    from circwidgets.model.testing import random_model

    m = random_model(n_layers=2, n_heads=2, d_model=8, d_head=4, d_vocab=12, n_ctx=8, seed=0)
    t = torch.tensor([[1, 2, 3, 4], [4, 3, 2, 1]])
    want = engine.direct_logit_attribution(m, t, -1, 5)
    assert want.shape == (2, 2, 2)
    torch.testing.assert_close(engine.activations.direct_logit_attribution(TransformerSource(m), t, -1, 5), want)
    torch.testing.assert_close(engine.activations.direct_logit_attribution(m, t[:1], 2, (5, 3)),
                               engine.direct_logit_attribution(m, t[:1], 2, (5, 3)))


def test_passes_of_the_sources_refuse_our_own_model_with_what_to_do():
    """`engine.activations`' state runs and residual patching are for lazy / nnsight / HF models; handed our own
    Transformer (or its hook source) they say so (the engine runs it with hooks) rather than failing on a
    missing method."""
    from circwidgets.model.testing import random_model

    m = random_model(n_layers=2, n_heads=2, d_model=8, d_head=4, d_vocab=12, n_ctx=8, seed=0)
    t = torch.tensor([[1, 2, 3, 4]])
    for call in (lambda: engine.activations.ablated_run(m, t, heads=[(0, 1)]),
                 lambda: engine.activations.patch_residual(TransformerSource(m), t, t),
                 lambda: engine.activations.ablate_path(m, t, (0, 0), (1, 1))):
        with pytest.raises(NotImplementedError, match="takes the engine's functions directly"):
            call()
    assert engine.ablated_run(m, t, heads=[(0, 1)]).token_loss.shape == (1, 3)  # the engine's own run
    got, want = engine.activations.attention_patterns(TransformerSource(m), t), engine.attention_patterns(m, t)
    torch.testing.assert_close(got.pattern, want.pattern.float())  # the hook source's patterns and value norms
    torch.testing.assert_close(got.v_norm, want.v_norm.float())


def test_virtual_heads_and_induction_circuits_of_an_nnsight_model(pair):
    """`virtual_heads`, `k_composition_positivity` and `ov_copying` raised AttributeError ('LanguageModel' has no
    attribute 'cfg') on an nnsight model; now its patterns come from a trace and its weights as the other weight
    views get them (`streaming.resolve`): the engine's results on the converted model."""
    _, lm, ours = pair
    got, want = engine.virtual_heads(lm, TOKS, (0, 1), (1, 2)), engine.virtual_heads(ours, TOKS, (0, 1), (1, 2))
    torch.testing.assert_close(got.pattern, want.pattern, rtol=1e-4, atol=2e-5)
    torch.testing.assert_close(got.ov.materialize(), want.ov.materialize(), rtol=1e-4, atol=1e-5)
    off = 1 if ours.cfg.positional == "rotary" else None  # a rotary QK circuit is taken at an offset
    torch.testing.assert_close(engine.k_composition_positivity(lm, (0, 1), off),
                               engine.k_composition_positivity(ours, (0, 1), off), equal_nan=True)
    a, b = engine.ov_copying(lm, (1, 2)), engine.ov_copying(ours, (1, 2))
    assert (a.positivity, a.top1) == pytest.approx((b.positivity, b.top1))


@pytest.mark.parametrize("kind", ["gemma2", "gemma3_text", "olmo2", "phi3", "gpt_neox"])
def test_path_cuts_through_nnsight_in_every_norm_and_projection_layout(kind):
    """Path cuts through nnsight, equal to the engine's cut on the converted model (zero and mean ablation into
    q, k, v and all three; two source / destination pairs, so stored heads other than the first are cut):
    - Gemma 2 / 3 (were refused): the first norm multiplies by 1 + w, the removed write goes through the
      source block's RMS post-norm with its scale frozen (`Transformer.attn_write_factor`), Gemma 3's per-head
      q/k norms apply to the recomputed projections as in the forward pass;
    - OLMo-2 (was refused): no first norm, and a q / k norm over all heads, so the whole projection is
      recomputed from the cut stream and normalised before the head's columns replace the norm's output;
    - Phi-3 (was refused): one fused projection, all queries then the K/V heads' keys then their values;
    - Pythia (was refused): a LayerNorm, and a fused projection laid out per head as [q | k | v]."""
    hf = _hf_family(kind)
    ours = cw.from_hf(hf)
    lm = nnsight.LanguageModel(hf, tokenizer=_tokenizer(97))
    ref = torch.randint(1, 97, (2, 11), generator=torch.Generator().manual_seed(7))
    for src, dst in (((0, 1), (1, 2)), ((0, 3), (1, 1))):
        for ablation in ("zero", "mean"):
            for cut in ("q", "k", "v", ("q", "k", "v")):
                got = engine.ablate_path(lm, TOKS, src, dst, kind=cut, ablation=ablation, reference=ref)
                want = engine.ablate_path(ours, TOKS, src, dst, kind=cut, ablation=ablation, reference=ref)
                assert abs(want.delta) > 1e-3  # the cut did something
                assert got.intervened == pytest.approx(want.intervened, rel=1e-5, abs=1e-5), (src, dst, ablation, cut)
                assert got.notes == want.notes


def test_nnsight_cuts_and_expansion_cover_every_family_the_converter_reads():
    """A family added to the converter must get its nnsight cut sites (`NNsightSource._cut_sites`) too: until
    then it would be refused with a message, and this test says so."""
    from circwidgets.model.convert import _HF_FAMILIES
    from circwidgets.model.nnsight_source import CUT_FAMILIES, EXPANSION_FAMILIES

    assert set(CUT_FAMILIES) == set(EXPANSION_FAMILIES) == {"gpt2", *_HF_FAMILIES}


@pytest.mark.parametrize("kind", ["gpt2", "llama", "gemma2", "gpt_neox"])
def test_decisive_position_through_nnsight_and_lazily_is_the_engines(kind, tmp_path, monkeypatch):
    """The paths view of a lazy checkpoint / nnsight model opened at the last position ("the decisive position
    needs the model in memory"). The head's write at every position comes back from one pass (`head_writes`:
    z W_O, unfolded, as the engine's `hook_result`), the centred unembedding columns are read from the source
    (`centred_unembedding`), and the position is the engine's for every head."""
    from circwidgets.engine.activations import as_source

    hf = _hf_family(kind) if kind in ("gemma2", "gpt_neox") else _hf(kind)
    ours = cw.from_hf(hf)
    lm = nnsight.LanguageModel(hf, tokenizer=_tokenizer(97))
    hf.save_pretrained(tmp_path / "ckpt")
    lazy = cw.from_hf(tmp_path / "ckpt", lazy=True, cache_dir=tmp_path / "cache")
    toks = torch.tensor([1, 5, 9, 3, 5, 9, 3, 7, 2, 8, 1, 5, 9, 3, 7, 2, 8])
    pos = engine.induction_positions(toks)
    _, cache = ours.run_with_cache(toks[None])
    W_U = ours.W_U.double()
    centred = W_U[:, toks[pos + 1]] - W_U.mean(1, keepdim=True)
    chosen = set()
    for layer, h in [(1, 0), (1, 1), (1, 2), (1, 3), (0, 2)]:
        want = engine.decisive_position(ours, toks, (layer, h))
        chosen.add(want)
        for model in (lm, lazy):
            src = as_source(model)
            torch.testing.assert_close(src.head_writes(toks[None], [(layer, h)])[(layer, h)][0].double(),
                                       cache["result", layer][0, :, h].double(), rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(src.centred_unembedding(toks[pos + 1]).double(), centred, rtol=1e-4, atol=1e-5)
            assert engine.decisive_position(model, toks, (layer, h)) == want
    assert len(chosen) > 1  # the heads decide at different positions: the rule, not a fixed answer, is compared
    # the vocabulary's mean is read once and cached with the checkpoint: a fresh lazy model reads only the columns
    from circwidgets.model.lazy_source import LazySource

    again, reads, real = as_source(cw.from_hf(tmp_path / "ckpt", lazy=True, cache_dir=tmp_path / "cache")), [], \
        LazySource._final
    monkeypatch.setattr(LazySource, "_final", lambda self, rows: reads.append(rows) or real(self, rows))
    torch.testing.assert_close(again.centred_unembedding(toks[pos + 1]).double(), centred, rtol=1e-4, atol=1e-5)
    assert len(reads) == 1
