"""Hostile inputs and faults (issue 14): no silent wrong numbers, nothing torn, clear errors.

Each test names the defect it pins; every one failed on the code before the fix."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import circwidgets as cw
from circwidgets.model import ModelConfig, ModelFileError, Transformer
from circwidgets.model.io import atomic_write_bytes, read_metadata
from circwidgets.model.testing import random_model

ROOT = Path(__file__).resolve().parents[1]


def small_model(**kw) -> Transformer:
    return random_model(dtype=torch.float32, **kw)


def _save_raw(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=meta)


# --------------------------------------------------------------------------- item 5: permissions
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_respect_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        m = small_model()
        files = [cw.save(m, tmp_path / "m.safetensors"), atomic_write_bytes(tmp_path / "x.json", b"{}")]
        from circwidgets.train import TrainConfig, Trainer
        from circwidgets.train.tasks import BigramTask

        tc = TrainConfig(steps=1, eval_every=1, warmup=1, batch_size=2)
        t = Trainer(m, BigramTask(m.cfg.d_vocab, m.cfg.n_ctx), tc, out_dir=tmp_path / "run",
                    progress=False, callbacks=[])
        t.train()
        files += [t.checkpoint_path, tmp_path / "run" / "metrics.json"]
    finally:
        os.umask(old)
    for f in files:
        assert (f.stat().st_mode & 0o777) == mode, (f, oct(f.stat().st_mode))


# --------------------------------------------------------------------------- item 8: litter
def test_killed_save_leaves_no_temporary_after_next_save(tmp_path):
    """A save killed mid-write (SIGKILL) leaves a half-written `.tmp`; the next save of that path
    removes it (its writer is dead), and the file itself was never touched."""
    path = tmp_path / "m.safetensors"
    cw.save(small_model(), path)
    before = path.read_bytes()
    script = textwrap.dedent("""
        import sys, time
        import circwidgets as cw, safetensors.torch as st
        from circwidgets.model.testing import random_model
        def slow_save(tensors, filename, metadata=None):
            with open(filename, "wb") as f:
                f.write(b"half a file")
                f.flush()
            print("writing", flush=True)
            time.sleep(60)
        st.save_file = slow_save
        cw.save(random_model(), sys.argv[1])
    """)
    p = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert p.stdout.readline().strip() == "writing"
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
    litter = list(tmp_path.glob("*.tmp"))
    assert len(litter) == 1 and litter[0].read_bytes() == b"half a file"
    assert path.read_bytes() == before  # the killed save never touched the file
    cw.save(small_model(seed=1), path)
    assert not list(tmp_path.glob("*.tmp"))
    assert cw.load(path).cfg == small_model().cfg


def test_stale_temporary_of_unknown_writer_removed_by_age_only(tmp_path):
    path = tmp_path / "m.safetensors"
    fresh = tmp_path / "m.safetensors.abcd1234.tmp"  # e.g. another host's writer, still at work
    old = tmp_path / "m.safetensors.efgh5678.tmp"
    other = tmp_path / "n.safetensors.ijkl9012.tmp"  # another target's temporary: not ours
    for f in (fresh, old, other):
        f.write_bytes(b"partial")
    long_ago = time.time() - 2 * 3600
    os.utime(old, (long_ago, long_ago))
    os.utime(other, (long_ago, long_ago))
    cw.save(small_model(), path)
    assert fresh.exists() and other.exists() and not old.exists()


# --------------------------------------------------------------------------- item 7: dtypes, tokenizer JSON
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool, torch.float8_e4m3fn])
def test_non_float_tensors_in_model_file_refused(tmp_path, dtype):
    m = small_model()
    tensors = {k: v.detach().clone() for k, v in m.state_dict().items()}
    tensors["W_Q"] = tensors["W_Q"].to(dtype)
    path = tmp_path / "m.safetensors"
    _save_raw(path, tensors, {"format": "circwidgets-1", "config": m.cfg.to_json()})
    with pytest.raises(ModelFileError, match=r"tensor W_Q has dtype \w+.*floating point") as e:
        cw.load(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_float_dtypes_still_load(tmp_path, dtype):
    m = small_model()
    path = cw.save(m, tmp_path / "m.safetensors", dtype=dtype)
    got = cw.load(path)
    for k, v in m.state_dict().items():
        torch.testing.assert_close(got.state_dict()[k], v.to(dtype).float())


def test_garbage_tokenizer_json_in_model_file_names_the_file(tmp_path):
    path = cw.save(small_model(), tmp_path / "m.safetensors", extra_metadata={"tokenizer": "{not json"})
    with pytest.raises(ModelFileError, match="tokenizer") as e:
        cw.load(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage_header", "huge_header"])
def test_damaged_model_file_is_a_model_file_error(tmp_path, damage):
    path = cw.save(small_model(), tmp_path / "m.safetensors")
    data = path.read_bytes()
    bad = {"truncate": data[: len(data) - 40], "empty": b"",
           "garbage_header": (20).to_bytes(8, "little") + b"\xff" * 20 + data[28:],
           "huge_header": (2**62).to_bytes(8, "little") + data[8:]}[damage]
    path.write_bytes(bad)
    with pytest.raises(ModelFileError, match="truncated or corrupted") as e:
        cw.load(path)
    assert str(path) in str(e.value)
    if damage != "truncate":
        with pytest.raises(ModelFileError):
            read_metadata(path)


def test_save_html_replaces_the_file_atomically(tmp_path, monkeypatch):
    """The export is written beside the target and renamed over it: until the rename the old page
    is there, whole (a reader once saw an empty file)."""
    import circwidgets.model.io as io_mod
    from circwidgets.widgets.composition import Composition

    target = tmp_path / "page.html"
    target.write_text("<html>old page</html>", encoding="utf-8")
    replaced = []
    real_replace = os.replace

    def spy(src, dst):
        assert Path(dst) == target and Path(target).read_text(encoding="utf-8") == "<html>old page</html>"
        replaced.append(Path(src).read_text(encoding="utf-8"))
        real_replace(src, dst)

    monkeypatch.setattr(io_mod.os, "replace", spy)
    w = Composition(small_model(), [1, 2, 3, 4])
    p = w.save_html(target)
    assert len(replaced) == 1 and replaced[0] == p.read_text(encoding="utf-8") and "cw-data" in replaced[0]
    assert not list(tmp_path.glob("*.tmp"))


# --------------------------------------------------------------------------- item 2: config validation
BASE_CFG = dict(n_layers=2, d_model=16, n_heads=2, d_head=8, d_vocab=20, n_ctx=12)


@pytest.mark.parametrize("field, value", [
    ("attn_scale", float("nan")), ("attn_scale", 0.0), ("attn_scale", -2.0), ("attn_scale", float("inf")),
    ("attn_scale", "8"), ("attn_scale", True), ("attn_scale", 10**400),
    ("ln_eps", -1.0), ("ln_eps", 0.0), ("ln_eps", float("nan")), ("ln_eps", float("inf")), ("ln_eps", None),
    ("attn_only", "no"), ("attn_only", 0), ("biases", "yes"), ("biases", None),
    ("n_ctx", 10**12), ("n_ctx", 1e12), ("n_ctx", 2**20 + 1), ("d_vocab", 2**40), ("d_model", 0),
    ("n_heads", 1.0), ("d_mlp", -4), ("d_mlp", 2**30), ("bos_token_id", 1.0), ("bos_token_id", 20),
    ("name", 5), ("normalization", "BatchNorm"), ("positional", ["standard"]),
])
def test_config_rejects_bad_field_naming_it(field, value):
    with pytest.raises(ValueError, match=rf"ModelConfig\.{field} must be"):
        ModelConfig(**{**BASE_CFG, field: value})


def test_config_limits_still_accept_real_shapes():
    gpt2 = ModelConfig(n_layers=12, d_model=768, n_heads=12, d_head=64, d_vocab=50257, n_ctx=1024,
                       attn_only=False, normalization="LN", biases=True, attn_scale=8, ln_eps=1e-5)
    assert gpt2.d_mlp == 3072 and ModelConfig(**{**BASE_CFG, "n_ctx": 2**20}).n_ctx == 2**20


def test_bad_config_in_model_file_is_a_model_file_error(tmp_path):
    m = small_model()
    bad = {**m.cfg.to_dict(), "attn_scale": float("nan")}
    path = tmp_path / "m.safetensors"
    _save_raw(path, {k: v.contiguous() for k, v in m.state_dict().items()},
              {"format": "circwidgets-1", "config": json.dumps(bad)})
    with pytest.raises(ModelFileError, match=r"invalid config.*attn_scale"):
        cw.load(path)


_ANY = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                 st.text(max_size=8), st.sampled_from(["LN", "LNPre", "standard", "shortformer", "none", "relu"]),
                 st.lists(st.integers(0, 3), max_size=2),
                 st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))
_FIELDS = [f.name for f in dataclasses.fields(ModelConfig)]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.dictionaries(st.sampled_from(_FIELDS + ["bogus"]), _ANY, max_size=4),
       drop=st.lists(st.sampled_from(list(BASE_CFG)), max_size=1),
       valid=st.dictionaries(st.sampled_from(list(BASE_CFG)), st.integers(1, 40), max_size=3))
def test_config_fuzz_valid_or_value_error_naming_a_field(changes, drop, valid):
    """Random dicts: either a valid config (which round-trips through JSON) or a ValueError that
    names a field; never another exception."""
    d = {**BASE_CFG, **valid, **changes}
    for k in drop:
        d.pop(k, None)
    try:
        cfg = ModelConfig.from_dict(d)
    except ValueError as e:
        msg = str(e)
        # a field is named as "ModelConfig.f must ...", "ModelConfig.f=v needs ..." or "ModelConfig.f['key'] ..."
        named = any(re.search(rf"ModelConfig\.{f}[ =\[]", msg) for f in _FIELDS)
        assert "unknown ModelConfig fields" in msg or named, msg
        return
    assert ModelConfig.from_dict(json.loads(cfg.to_json())) == cfg
    assert cfg.attn_scale > 0 and math.isfinite(cfg.attn_scale) and cfg.ln_eps > 0 and cfg.n_ctx <= 2**20


# --------------------------------------------------------------------------- item 4: running loss on resume
class _Crash(Exception):
    pass


def _trainer(out, crash_at: int | None = None):
    from circwidgets.train import TrainConfig, Trainer
    from circwidgets.train.tasks import BigramTask

    class CrashingTask(BigramTask):
        def batch(self, batch_size, seed, step):
            if crash_at is not None and step == crash_at:
                raise _Crash(f"simulated crash at step {step}")
            return super().batch(batch_size, seed, step)

    model = Transformer(ModelConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, d_vocab=24, n_ctx=16), seed=0)
    tc = TrainConfig(steps=20, batch_size=4, warmup=2, eval_every=10, checkpoint_every=4, eval_batches=1,
                     icl_n_seqs=2)
    return Trainer(model, CrashingTask(24, 16, n_successors=2), tc, out_dir=out, progress=False, callbacks=[])


def test_resume_after_crash_logs_the_same_train_loss(tmp_path):
    """A run that dies mid-way (after the step-8 checkpoint, before the step-10 evaluation) and is
    resumed logs the same train_loss as one that never stopped: the checkpoint holds the running
    loss of its own step, not of the last finished `train()`."""
    full = _trainer(tmp_path / "full").train()
    crashed = _trainer(tmp_path / "crash", crash_at=9)
    with pytest.raises(_Crash):
        crashed.train()
    resumed = _trainer(tmp_path / "crash").load_checkpoint()
    assert resumed.step == 8 and resumed._running[1] == 8
    resumed.train()
    want = [(r["step"], r["train_loss"]) for r in full.history if "train_loss" in r]
    got = [(r["step"], r["train_loss"]) for r in resumed.history if "train_loss" in r]
    assert [s for s, _ in got] == [10, 20]
    assert [s for s, _ in want] == [10, 20]
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6, abs=0)


# --------------------------------------------------------------------------- item 7: resume from a bad checkpoint
@pytest.mark.parametrize("damage", ["truncate", "negative_step", "bad_running", "garbage"])
def test_resume_from_damaged_checkpoint_names_path_and_hint(tmp_path, damage):
    from circwidgets.train.trainer import CHECKPOINT_FORMAT

    tr = _trainer(tmp_path / "run")
    tr.train(4)
    ck = tr.checkpoint_path
    data = ck.read_bytes()
    if damage == "truncate":
        ck.write_bytes(data[: len(data) * 2 // 3])
    elif damage == "garbage":
        ck.write_bytes(b"\x00" * 100)
    else:
        from circwidgets.model.io import read_safetensors

        meta, tensors = read_safetensors(ck, float_only=False)
        state = json.loads(meta["trainer"])
        if damage == "negative_step":
            state["step"] = -5
        else:
            state["running_loss"] = ["x", -1]
        _save_raw(ck, tensors, {**meta, "trainer": json.dumps(state), "format": CHECKPOINT_FORMAT})
    with pytest.raises(ModelFileError) as e:
        _trainer(tmp_path / "run").load_checkpoint()
    msg = str(e.value)
    assert str(ck) in msg and "fresh" in msg and "Safetensor" not in msg, msg
    if damage == "negative_step":
        assert "step must be an integer >= 0, got -5" in msg


# --------------------------------------------------------------------------- item 7: clear errors for bad inputs
@pytest.mark.parametrize("tokens, match", [
    (np.array([1, 2, 3], dtype=np.uint64), None),  # valid: read as int64
    (np.array([1, 2**63 + 5], dtype=np.uint64), r"ids >= 2\*\*63"),
    (torch.tensor([1, 2], dtype=torch.uint16), None),
    (torch.tensor([1, 70000], dtype=torch.uint32), r"outside \[0, 13\)"),
    ([], "tokens is empty"),
    ([[]], "tokens is empty"),
    ([2**70], r"integer ids in \[0, 13\).*could not be read"),
    ([[1, 2], [3]], r"integer ids in \[0, 13\).*could not be read"),
])
def test_token_ids_clear_errors(tokens, match):
    m = small_model()
    if match is None:
        t = m.check_tokens(tokens)
        assert t.dtype == torch.int64 and t.tolist() == [torch.as_tensor(tokens).to(torch.int64).tolist()]
        assert torch.isfinite(m(tokens)).all()
    else:
        with pytest.raises(ValueError, match=match):
            m(tokens)


def test_lone_surrogate_text_is_a_clear_error():
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import models, pre_tokenizers

    from circwidgets.model import Tokenizer

    backend = RustTokenizer(models.WordLevel({"a": 1, "b": 2, "[UNK]": 0}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    m = small_model()
    m.tokenizer = Tokenizer(backend)
    assert m.to_tokens("a b", prepend_bos=False).tolist() == [[1, 2]]
    with pytest.raises(ValueError, match=r"not valid Unicode: '\\ud800' at index 2 is a lone surrogate"):
        m.to_tokens("a \ud800 b")
    with pytest.raises(TypeError, match="text must be a str, got bytes"):
        m.tokenizer.encode(b"a b")


def test_garbage_tokenizer_json_file_named(tmp_path):
    from circwidgets.model import Tokenizer

    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"model": 5}')
    with pytest.raises(ValueError, match=rf"{bad}: not a valid tokenizer JSON"):
        Tokenizer.from_file(bad)


@pytest.mark.parametrize("cut", [[0, 0, 1, 0], [0, 0, 1, 0, "k", 9], [0, "x", 1, 0, "q"], [1, 0, 0, 1, "k"]])
def test_ablation_malformed_cut_is_a_message(cut):
    from circwidgets.widgets.ablation import Ablation

    m = small_model()
    w = Ablation(m, [1, 2, 3, 4, 5], cuts=[cut])
    assert re.search("path cut|out of range|not an integer|earlier layer", w.error), w.error
    assert "list index out of range" not in w.error and "not iterable" not in w.error
    ok = Ablation(m, [1, 2, 3, 4, 5])
    assert ok.error == ""
    ok.cuts = [cut]
    assert ok.error.startswith("not applied:") and ok.cuts == [], (ok.error, ok.cuts)
    assert "list index out of range" not in ok.error
    ok.cuts = [[0, 1, 1, 2, "v"]]
    assert ok.error == "" and ok.loss != ok.clean_loss


# --------------------------------------------------------------------------- item 2b: overflow outputs
def overflow_model(which: str = "v") -> Transformer:
    """Finite weights whose products overflow float32: head L0H1's W_V x 1e30 (or L1H2's W_Q, W_K)."""
    m = small_model()
    with torch.no_grad():
        if which == "v":
            m.W_V[0, 1] *= 1e30
        else:
            m.W_Q[1, 2] *= 1e30
            m.W_K[1, 2] *= 1e30
    assert all(torch.isfinite(p).all() for p in m.parameters())
    return m


TOKS = torch.tensor([[1, 2, 3, 4, 1, 2, 3, 4]])


def _entry_points():
    import circwidgets.engine as E
    from circwidgets.engine.ablation_state import ablated_run
    from circwidgets.engine.patterns import attention_patterns

    fwd = r"forward pass first overflows at layer 1, head \d \(blocks\.1\.attn\.hook_attn_scores\)"
    return {
        "composition_scores": (lambda m: E.composition_scores(m, "v"), "v", r"first at layer1 0, head1 1, layer2 1"),
        "composition_one_sided": (lambda m: E.composition_scores_one_sided(m, "k"), "v", r"layer1 0, head1 1"),
        "head_scores": (lambda m: E.head_scores(m, "induction", seq_len=4), "v", fwd),
        "all_head_scores": (lambda m: E.all_head_scores(m, seq_len=4), "v", fwd),
        "in_context_loss": (lambda m: E.in_context_loss(m, seq_len=4), "v", fwd),
        "eigen_positivity": (lambda m: E.eigen_positivity(m, "qk"), "qk", r"qk circuit .*first at layer 1, head 2"),
        "eigenvalues": (lambda m: E.eigenvalues(m, 1, 2, "qk"), "qk", r"L1H2's qk circuit"),
        "ablate_heads": (lambda m: E.ablate_heads(m, TOKS, [(0, 0)]), "v", fwd),
        "ablation_table": (lambda m: E.ablation_table(m, TOKS), "v", fwd),
        "ablate_path": (lambda m: E.ablate_path(m, TOKS, (0, 0), (1, 0)), "v", fwd),
        "patch_heads": (lambda m: E.patch_heads(m, TOKS, TOKS.flip(-1)), "v", fwd),
        "patch_residual": (lambda m: E.patch_residual(m, TOKS, TOKS.flip(-1)), "v", fwd),
        "ablated_run": (lambda m: ablated_run(m, TOKS, heads=[(1, 1)]), "v", fwd),
        "path_terms": (lambda m: E.path_terms(m, TOKS), "v", r"path terms: term '.*L0H1.*'|" + fwd),
        "attention_patterns": (lambda m: attention_patterns(m, TOKS), "v", fwd),
        "direct_logit_attribution": (lambda m: E.direct_logit_attribution(m, TOKS, 3, 2), "v",
                                     r"logit_attribution: heads came out NaN/inf \(first at layer 1, head 0.*" + fwd),
        "logit_attribution": (lambda m: E.logit_attribution(m, TOKS.repeat(2, 1), 3, (2, 5)), "qk",
                              r"heads came out NaN/inf \(first at batch 0, layer 1, head 2;"),
        "virtual_heads": (lambda m: E.virtual_heads(m, TOKS, (0, 1), (1, 2)), "v",
                          r"virtual head L0H1->L1H2 pattern came out NaN/inf \(first at batch 0;.*" + fwd),
        "positional_qk_profile": (lambda m: E.positional_qk_profile(m, (1, 2)), "qk",
                                  r"L1H2's positional QK profile came out NaN/inf \(first at offset 0;"),
        "skip_trigrams": (lambda m: E.skip_trigrams(m, 1, 2, k=3), "qk",
                          r"L1H2's skip-trigram QK maxima came out NaN/inf \(first at source \d+;"),
        "trace_copying_score": (lambda m: E.trace_copying_score(m), "v",
                                r"trace copying score came out NaN/inf \(first at layer 0, head 1;"),
    }


@pytest.mark.parametrize("entry", list(_entry_points()))
def test_overflow_outputs_raise_naming_layer_and_head(entry):
    from circwidgets.engine._check import NonFiniteResultError

    fn, which, where = _entry_points()[entry]
    fn(small_model())  # finite model: no error
    with pytest.raises(NonFiniteResultError, match="came out NaN/inf") as e:
        fn(overflow_model(which))
    assert re.search(where, str(e.value)), str(e.value)
    assert "overflow torch.float32" in str(e.value)


def test_legitimate_nan_outputs_are_not_errors():
    import circwidgets.engine as E

    m = small_model()
    c = E.composition_scores(m, "q")
    assert c[1, :, 0].isnan().all() and torch.isfinite(c[0, :, 1]).all()  # NaN below the diagonal stays
    ind = E.head_scores(m, "induction", tokens=torch.tensor([[1, 2, 3, 4, 5]]))  # no repeats: no mask entry
    assert ind.isnan().all()
    zero = small_model()
    with torch.no_grad():
        zero.W_O[0, 0] = 0
    assert E.eigen_positivity(zero, "ov")[0, 0].isnan()  # a zero circuit has no eigen-positivity
    assert E.trace_copying_score(zero)[0, 0].isnan()  # nor a trace copying score


def test_overflow_becomes_the_widgets_error_message():
    from circwidgets.widgets.composition import Composition

    w = Composition(overflow_model("v"), [1, 2, 3, 4])
    assert "came out NaN/inf" in w.error and re.search(r"layer1? \d, head1? \d", w.error), w.error


# ----------------------------------------------------------------- engine arguments (round 3)
def test_integer_scalars_of_numpy_and_torch_are_indices_floats_named_not_integers():
    """NumPy / 0-d tensor ints (what argmax gives) were refused as "out of range" though in range;
    a float was also called "out of range". One validator (`_check._index`) now decides both."""
    import circwidgets.engine as E

    m = small_model()
    assert E.check_layer_head(m, np.int64(1), torch.tensor(0)) == (1, 0)
    assert E.check_token(m, np.int32(3)) == 3
    assert torch.equal(E.eigenvalues(m, np.int64(1), np.int64(0)), E.eigenvalues(m, 1, 0))
    with pytest.raises(IndexError, match=r"layer=1\.0 is not an integer: this model has layers 0\.\.1"):
        E.eigenvalues(m, 1.0, 0)
    with pytest.raises(IndexError, match=r"token='x' is not an integer: token ids are 0\.\.\d+"):
        E.logit_attribution(m, TOKS, 1, "x")
    with pytest.raises(IndexError, match="head=True is not an integer"):
        E.check_head(m, True)


def test_logit_diff_metric_checks_pos_and_token_ids():
    """It indexed the logits raw: pos / good past the end raised torch's IndexError, and good=-1
    silently scored the last token of the vocabulary."""
    import circwidgets.engine as E

    m = small_model()
    V = m.cfg.d_vocab
    with pytest.raises(IndexError, match=r"pos=99 is out of range: these tokens have positions 0\.\.7"):
        E.ablate_heads(m, TOKS, [(0, 0)], metric=E.logit_diff_metric(99, 1))
    with pytest.raises(IndexError, match=rf"good=-1 is out of range: token ids are 0\.\.{V - 1}"):
        E.ablate_heads(m, TOKS, [(0, 0)], metric=E.logit_diff_metric(1, -1))
    with pytest.raises(IndexError, match=rf"bad={V} is out of range"):
        E.ablate_heads(m, TOKS, [(0, 0)], metric=E.logit_diff_metric(1, 0, V))
    with pytest.raises(TypeError, match=r"pos=1\.0 must be an integer"):
        E.logit_diff_metric(1.0, 1)
    e = E.ablate_heads(m, TOKS, [(0, 0)], metric=E.logit_diff_metric(np.int64(-1), np.int64(2)))
    assert math.isfinite(e.clean)


def test_patching_report_checks_pos():
    """pos past the end (or a float) raised torch's IndexError from inside the report."""
    import circwidgets.engine as E

    m = small_model()
    for pos, msg in ((99, r"pos=99 is out of range"), (1.0, r"pos=1\.0 is not an integer")):
        with pytest.raises(IndexError, match=msg + r": these tokens have positions 0\.\.7"):
            E.patching_report(m, TOKS, TOKS.flip(-1), pos=pos)
    assert E.patching_report(m, TOKS, TOKS.flip(-1)).pos == -1  # kept as given


def test_path_terms_for_token_checks_batch_and_pos_types():
    """batch=0.5 / pos=1.0 passed the range checks and failed inside torch indexing."""
    import circwidgets.engine as E

    m = small_model()
    pt = E.path_terms(m, TOKS, max_order=1)
    with pytest.raises(IndexError, match=r"batch=0\.5 is not an integer: these tokens have sequences 0\.\.0"):
        pt.for_token(1, 2, batch=0.5)
    with pytest.raises(IndexError, match=r"pos=1\.0 is not an integer: these tokens have positions 0\.\.7"):
        pt.for_token(1.0, 2)
    assert pt.for_token(np.int64(1), np.int64(2)) == pt.for_token(1, 2)


def test_counts_and_block_sizes_are_checked():
    """n_samples=0 raised torch.cat's error, n_samples=1 returned a NaN std silently; block_size=0
    raised range()'s error; a float bos / seed was truncated or failed inside torch."""
    import circwidgets.engine as E

    m = small_model()
    for n in (0, 1, 2.5):
        with pytest.raises(ValueError, match=rf"n_samples={n!r} must be an integer >= 2"):
            E.composition_baseline(m, n_samples=n)
    with pytest.raises(ValueError, match="block_size=0 must be an integer >= 1"):
        E.copying_score(m, n_tokens=8, block_size=0)
    with pytest.raises(ValueError, match="block_size=0 must be an integer >= 1"):
        E.diagonal_stats(E.full_ov(m)[0, 0], block_size=0)
    for bos in (2.5, True):
        with pytest.raises(ValueError, match=rf"bos={bos!r} is out of range: token ids are 0\.\.9"):
            E.repeated_tokens(10, 3, bos=bos)
    for n_pos in (2.5, True):  # were truncated to 2 and 1
        with pytest.raises(ValueError, match=rf"n_pos={n_pos!r} must be in 1\.\.\d+"):
            E.positional_qk_profile(m, (1, 0), n_pos=n_pos)
    with pytest.raises(ValueError, match=r"seed=1\.5 must be an integer"):
        E.head_scores(m, seed=1.5)


def test_per_token_loss_refuses_logits_that_do_not_fit_the_tokens():
    """logits of 5 positions with tokens of 4 returned 3 losses silently (gather takes a smaller index);
    an id past d_vocab raised torch's gather error."""
    import circwidgets.engine as E

    with pytest.raises(ValueError, match=r"logits \(1, 5, 10\) do not fit tokens \(1, 4\)"):
        E.per_token_loss(torch.randn(1, 5, 10), torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"logits \(1, 5, 10\) do not fit tokens \(1, 4\)"):
        E.loss_metric(torch.randn(1, 5, 10), torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"tokens contains ids outside \[0, 10\) \(min 0, max 12\)"):
        E.per_token_loss(torch.randn(1, 2, 10), torch.tensor([[0, 12]]))


def test_negative_or_fractional_counts_are_refused_not_sliced():
    """frequent_tokens(n=-1) returned every id but the rarest (`order[:-1]`), n=2.5 and float token ids
    were truncated; top_composition_pairs(k=-3) returned [] and k=2.5 two pairs; offset_profile(chunk=0)
    raised range()'s error."""
    import circwidgets.engine as E

    toks = torch.tensor([1, 1, 2, 3, 3, 3])
    assert E.frequent_tokens(toks, np.int64(2)).tolist() == [3, 1]
    assert E.frequent_tokens(toks, 0).tolist() == []
    for n in (-1, 2.5):
        with pytest.raises(ValueError, match=rf"n={n!r} must be an integer >= 0"):
            E.frequent_tokens(toks, n)
    with pytest.raises(TypeError, match="tokens must be integer ids, got dtype torch.float32"):
        E.frequent_tokens(toks.float() + 0.5, 2)
    scores = E.composition_scores(small_model())
    assert len(E.top_composition_pairs(scores, np.int64(2))) == 2
    for k in (-3, 2.5):
        with pytest.raises(ValueError, match=rf"k={k!r} must be an integer >= 0"):
            E.top_composition_pairs(scores, k)
    with pytest.raises(TypeError, match="vocab must be integer token ids, got dtype torch.float32"):
        E.skip_trigrams(small_model(), 1, 0, vocab=torch.tensor([1.5, 2.0]))  # was truncated to [1, 2]
    rot = small_model(positional="rotary")
    with pytest.raises(ValueError, match="chunk=0 must be an integer >= 1"):
        E.offset_profile(rot, [1, 2], chunk=0)


def test_top_k_memory_bounds_and_path_budget_arguments_are_checked():
    """Were accepted: `ablated_run(top_k=-1)` (an empty top table), `ablation_table(max_elements=-1)` (read as
    one copy per run), `path_budget(n_positions=0)` (None: "everything fits") and `max_order=-1`."""
    from circwidgets.engine.ablation_state import ablated_run
    from circwidgets.engine.interventions import ablation_table
    from circwidgets.engine.paths import path_budget

    m = random_model(n_layers=2, n_heads=2, d_model=8, d_head=4, d_vocab=12, n_ctx=8, seed=0)
    toks = torch.tensor([[0, 3, 5, 7, 2]])
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="top_k="):
            ablated_run(m, toks, heads=[(0, 0)], top_k=bad)
    assert ablated_run(m, toks, heads=[(0, 0)], keep_logits=False, top_k=0) is not None
    for bad in (-1, 0, float("nan"), "many"):
        with pytest.raises(ValueError, match="max_elements="):
            ablation_table(m, toks, max_elements=bad)
    torch.testing.assert_close(ablation_table(m, toks, max_elements=1.0), ablation_table(m, toks))
    # the copies a pass holds are bounded by their attention patterns too (here larger than their logits:
    # 4 heads x 64 x 64 per copy against 64 x 12): copies of 4 heads' runs by their logits would hold 4x the bound
    from circwidgets.model.transformer import Transformer

    wide = random_model(n_layers=1, n_heads=4, d_model=8, d_head=2, d_vocab=12, n_ctx=64, seed=1)
    long = torch.arange(64)[None] % 12
    runs, real = [], Transformer.run_with_hooks
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Transformer, "run_with_hooks",
                   lambda self, t, *a, **k: runs.append(t.shape[0]) or real(self, t, *a, **k))
        bounded = ablation_table(wide, long, max_elements=4 * 64 * 64)
    assert runs == [1, 1, 1, 1]  # one copy (its 16,384 pattern values) a pass
    torch.testing.assert_close(bounded, ablation_table(wide, long))
    with pytest.raises(ValueError, match="n_positions="):
        path_budget(m, 0, 2)
    with pytest.raises(ValueError, match="max_order="):
        path_budget(m, 5, -1)
    assert path_budget(m, 5, 2) is None  # a small model's full enumeration fits


def test_in_context_loss_refuses_a_repeat_length_with_no_repeated_position():
    """seq_len=1 returned NaN for the repeated half (its only token does not follow from context);
    length 2 is the shortest with a repeated loss, and it is finite."""
    import circwidgets.engine as E

    m = random_model(n_layers=2, n_heads=2, d_model=8, d_head=4, d_vocab=12, n_ctx=8, seed=0)
    with pytest.raises(ValueError, match="at least 2 \\(got 1\\)"):
        E.in_context_loss(m, seq_len=1)
    with pytest.raises(ValueError, match="at least 2 \\(got 1\\)"):
        E.in_context_loss(m, seq_len=[1, 3])
    r = E.in_context_loss(m, seq_len=2)
    assert np.isfinite(r.first) and np.isfinite(r.repeated)
