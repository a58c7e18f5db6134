"""Checkpoints that are damaged, changed under us or inconsistent with their config: a clear error naming the
file and the tensor, never a crash, a raw Python error or silently different numbers.

Each test names the defect it pins; every one failed on the code before the fix. Hugging Face sources are
the offline random builders of test_architectures.py, saved with `save_pretrained`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import circwidgets as cw
from circwidgets.model import ConversionError, ModelFileError
from circwidgets.model.convert import _check_logits
from circwidgets.model.io import read_safetensors
from circwidgets.model.testing import random_model

sys.path.insert(0, str(Path(__file__).parent))
import test_architectures as ta  # noqa: E402  (the offline random HF builders)

tf = pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parents[1]


def _save(model: torch.nn.Module, d: Path) -> Path:
    model.save_pretrained(d)
    assert (d / "model.safetensors").is_file()  # one shard: the tests edit it
    return d


def _rewrite(d: Path, edit) -> None:
    """Rewrite the checkpoint's model.safetensors with `edit(state_dict)` applied."""
    from safetensors.torch import load_file, save_file

    sd = load_file(str(d / "model.safetensors"))
    edit(sd)
    save_file(sd, str(d / "model.safetensors"), metadata={"format": "pt"})


def _small_file(path: Path, edit=None, dtype: torch.dtype = torch.float32) -> Path:
    """A circwidgets model file, its tensors passed through `edit` first."""
    from safetensors.torch import save_file

    m = random_model(dtype=torch.float32)
    sd = {k: v.detach().to(dtype).clone() for k, v in m.state_dict().items()}
    if edit is not None:
        edit(sd)
    save_file(sd, str(path), metadata={"format": "circwidgets-1", "config": m.cfg.to_json()})
    return path


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    return _save(ta.hf_model("llama"), tmp_path_factory.mktemp("llama"))


@pytest.fixture()
def ckpt(llama_dir, tmp_path) -> Path:
    """A private copy of the Llama checkpoint (tests damage it)."""
    return Path(shutil.copytree(llama_dir, tmp_path / "ckpt"))


# ------------------------------------------------------------------ 1: a lazy checkpoint changed on disk
def test_lazy_checkpoint_overwritten_in_place_with_same_size_is_refused(ckpt, tmp_path):
    """Was: the same LazyModel silently returned the new file's bytes under the old header."""
    other = _save(ta.hf_model("llama", seed=1), tmp_path / "other")
    shard = ckpt / "model.safetensors"
    assert shard.stat().st_size == (other / "model.safetensors").stat().st_size
    lm = cw.from_hf(str(ckpt), lazy=True, cache_dir=tmp_path / "cache")
    before = lm.layer_weights(1)["W_Q"]
    inode = shard.stat().st_ino
    time.sleep(0.05)  # past the filesystem's mtime granularity: the rewrite gets a new mtime
    shutil.copyfile(other / "model.safetensors", shard)  # in place: same inode, same size
    assert shard.stat().st_ino == inode and shard.stat().st_size == (other / "model.safetensors").stat().st_size
    with pytest.raises(ModelFileError, match=re.escape(f"{shard}: changed on disk since it was opened; load it again")):
        lm.layer_weights(1)
    fresh = cw.from_hf(str(ckpt), lazy=True, cache_dir=tmp_path / "cache")  # loading it again works
    assert not torch.equal(fresh.layer_weights(1)["W_Q"], before)


def test_lazy_checkpoint_replaced_is_refused(ckpt, tmp_path):
    lm = cw.from_hf(str(ckpt), lazy=True, cache_dir=tmp_path / "cache")
    _save(ta.hf_model("llama", seed=1), tmp_path / "other")
    os.replace(tmp_path / "other" / "model.safetensors", ckpt / "model.safetensors")  # a new inode
    with pytest.raises(ModelFileError, match="changed on disk since it was opened"):
        lm.layer_module(0)


def test_lazy_checkpoint_truncated_in_place_is_an_error_not_sigbus(ckpt, tmp_path):
    """Was: the process died with SIGBUS (a memory-mapped page of the truncated file touched). Run in a
    subprocess, so a regression fails this test instead of killing the test run."""
    script = textwrap.dedent("""
        import sys
        import circwidgets as cw
        from circwidgets.model import ModelFileError
        lm = cw.from_hf(sys.argv[1], lazy=True, cache_dir=sys.argv[2])
        with open(sys.argv[1] + "/model.safetensors", "r+b") as fh:
            fh.truncate(4096)  # rewritten in place (save_file / save_pretrained over the same path truncate first)
        try:
            lm.layer_weights(1)
        except ModelFileError as e:
            print("ERROR:", e)
    """)
    r = subprocess.run([sys.executable, "-c", script, str(ckpt), str(tmp_path / "cache")], capture_output=True,
                       text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert f"ERROR: {ckpt / 'model.safetensors'}: changed on disk since it was opened; load it again" in r.stdout


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_eager_load_of_a_checkpoint_keeps_no_view_of_its_file(ckpt, tmp_path, dtype):
    """The eager load (`from_hf(dir)`) reads the shards through a mapping for its duration only (the
    checkpoint's bytes stay page cache, not a second copy): the model it returns owns every weight, so
    truncating the file afterwards changes nothing (a weight left as a view would die with SIGBUS: run in a
    subprocess), and its logits equal Hugging Face's."""
    script = textwrap.dedent(f"""
        import sys, torch
        import circwidgets as cw
        m = cw.from_hf(sys.argv[1], dtype=torch.{dtype})
        toks = torch.arange(1, 9)[None]
        before = m(toks).clone()
        with open(sys.argv[1] + "/model.safetensors", "r+b") as fh:
            fh.truncate(4096)
        import gc; gc.collect()
        print("SAME", bool(torch.equal(m(toks), before)))
    """)
    r = subprocess.run([sys.executable, "-c", script, str(ckpt)], capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert "SAME True" in r.stdout
    hf = ta.hf_model("llama")  # the checkpoint's model (seed 0)
    ours = cw.from_hf(str(_save(hf, tmp_path / "again")))
    toks = torch.arange(1, 9)[None]
    with torch.no_grad():
        torch.testing.assert_close(ours(toks), hf(toks).logits, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ 2: Gemma's bidirectional attention
@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
def test_bidirectional_gemma_refused_on_every_path(family, tmp_path):
    """Was: refused only by the logits check of a model object; a checkpoint directory converted (eager
    and lazy, which skip that check) with logits 1.13 (relative) off."""
    kw = dict(**ta.COMMON, num_key_value_heads=2, head_dim=10, sliding_window=5, query_pre_attn_scalar=12,
              use_bidirectional_attention=True)
    model = (tf.Gemma2ForCausalLM(tf.Gemma2Config(**kw)) if family == "gemma2"
             else tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(**kw)))
    d = _save(model, tmp_path / family)
    msg = f"model_type '{family}' with use_bidirectional_attention=True .* not supported: our attention is causal"
    for convert in (lambda: cw.from_hf(model), lambda: cw.from_hf(str(d)),
                    lambda: cw.from_hf(str(d), lazy=True, cache_dir=tmp_path / "c")):
        with pytest.raises(ConversionError, match=msg):
            convert()


# ------------------------------------------------------------------ 3: an untied checkpoint without its head
def test_untied_checkpoint_without_its_head_is_refused(ckpt, tmp_path):
    """Was: converted as tied (W_U = W_E^T): logits 1.91 (relative) from Hugging Face's."""
    assert json.loads((ckpt / "config.json").read_text())["tie_word_embeddings"] is False
    _rewrite(ckpt, lambda sd: sd.pop("lm_head.weight"))
    msg = r"tie_word_embeddings=False, but the state dict has no 'lm_head.weight' \(the unembedding\)"
    with pytest.raises(ModelFileError, match=f"^{re.escape(str(ckpt))}: from_hf: the config says {msg}"):
        cw.from_hf(str(ckpt))
    with pytest.raises(ModelFileError, match=msg):
        cw.from_hf(str(ckpt), lazy=True, cache_dir=tmp_path / "c")
    hf = ta.hf_model("llama")  # a state dict with its config: the same refusal
    sd = {k: v for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    with pytest.raises(ConversionError, match=msg) as e:
        cw.from_hf(sd, config=hf.config)
    assert e.value.tensor == "lm_head.weight"
    gpt2 = tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=32, n_layer=1, n_head=4, vocab_size=50, n_positions=16,
                                            tie_word_embeddings=False))
    sd = {k: v for k, v in gpt2.state_dict().items() if k != "lm_head.weight"}
    with pytest.raises(ConversionError, match=msg):
        cw.from_hf(sd, config=gpt2.config)
    # a tied checkpoint has no head of its own, and converts
    tied = _save(tf.LlamaForCausalLM(tf.LlamaConfig(**{**ta.COMMON, "tie_word_embeddings": True})), tmp_path / "tied")
    assert cw.from_hf(str(tied)).cfg.tied_embeddings


# ------------------------------------------------------------------ 4: GPT-2's layer count from its config
def test_gpt2_checkpoint_must_match_its_config(tmp_path):
    """Was: a 2-layer GPT-2 checkpoint whose config says n_layer=1 converted as 2 layers (HF runs 1)."""
    d = _save(tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=50, n_positions=16)),
              tmp_path / "gpt2")
    cfg = json.loads((d / "config.json").read_text())
    cfg["n_layer"] = 1
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConversionError, match="the config says n_layers=1, the weights say 2"):
        cw.from_hf(str(d))
    with pytest.raises(ConversionError, match="the config says n_layers=1, the weights say 2"):
        cw.from_hf(str(d), lazy=True, cache_dir=tmp_path / "c")


# ------------------------------------------------------------------ 5: local attention the source ignores
def test_native_bridge_with_local_attention_is_refused():
    """Was: TransformerLens 4's native bridge ignores use_local_attn, but was converted with a sliding window
    (logits 0.6 off past the window, unseen by the 12-position check)."""
    if ta.tl_major() < 4:
        pytest.skip("TransformerLens 4's native bridge")
    import transformer_lens.model_bridge.sources  # noqa: F401  (attaches boot_native)
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    kw = dict(n_layers=2, d_model=24, n_heads=6, d_head=4, d_vocab=30, n_ctx=64, attn_only=True,
              normalization_type="LN", seed=0)
    local = TransformerBridge.boot_native(TransformerBridgeConfig(**kw, use_local_attn=True, window_size=20,
                                                                  attn_types=["local", "global"]),
                                          dtype=torch.float64).eval()
    plain = TransformerBridge.boot_native(TransformerBridgeConfig(**kw), dtype=torch.float64).eval()
    ta.randomise(local), ta.randomise(plain)
    toks = ta.tokens(30, n_pos=64)
    with torch.no_grad():  # the reason: the same weights give the same logits with or without local attention
        assert torch.equal(local(toks), plain(toks))
    with pytest.raises(ConversionError, match="use_local_attn=True, which its own forward pass ignores"):
        cw.from_transformer_lens(local)
    cw.from_transformer_lens(plain)


def test_logits_check_runs_past_the_sliding_window():
    """Was: 12 positions only, so a window of 16 the source does not apply passed the check."""
    ours = random_model(n_layers=2, d_model=16, n_heads=2, d_head=8, d_vocab=13, n_ctx=40, sliding_window=16)
    full = random_model(n_layers=2, d_model=16, n_heads=2, d_head=8, d_vocab=13, n_ctx=40)  # same draw, no window
    with torch.no_grad():
        assert torch.equal(ours(torch.arange(12)[None] % 13), full(torch.arange(12)[None] % 13))
    with pytest.raises(ConversionError, match="logits differ"):
        _check_logits(ours, full, torch.float64, "test")
    _check_logits(full, full, torch.float64, "test")


# ------------------------------------------------------------------ 6: cw.load reads the header first
def test_load_leaves_the_global_rng_alone(tmp_path):
    """Was: building the model for real (`Transformer(cfg, seed=None)`) drew from the global RNG."""
    p = cw.save(random_model(dtype=torch.float32), tmp_path / "m.safetensors")
    torch.manual_seed(123)
    state = torch.get_rng_state()
    cw.load(p)
    assert torch.equal(torch.get_rng_state(), state)


def test_foreign_file_refused_without_reading_its_tensors(tmp_path):
    """Was: every tensor copied (a 256 MiB file: +514 MiB) before the metadata was looked at. Here a
    4 GiB tensor (a sparse file) in a process whose address space has 1 GiB to spare: mapping or reading
    it fails, so only an implementation that looks at the header alone gives the expected error."""
    path = tmp_path / "foreign.safetensors"
    n = 2**30  # float32 values: 4 GiB
    header = json.dumps({"__metadata__": {"format": "pt"},
                         "model.embed_tokens.weight": {"dtype": "F32", "shape": [2**15, 2**15],
                                                       "data_offsets": [0, 4 * n]}}).encode()
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(header)) + header)
        fh.truncate(8 + len(header) + 4 * n)
    script = textwrap.dedent("""
        import resource, sys
        import circwidgets as cw
        from circwidgets.model import ModelFileError
        vm = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize")][0]
        resource.setrlimit(resource.RLIMIT_AS, (vm + 2**30, resource.getrlimit(resource.RLIMIT_AS)[1]))
        try:
            cw.load(sys.argv[1])
        except ModelFileError as e:
            print("ERROR:", e)
    """)
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc (Linux)")
    r = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
    assert f"ERROR: {path}: not a circwidgets model file" in r.stdout, (r.returncode, r.stdout, r.stderr[-2000:])


# ------------------------------------------------------------------ 7: non-finite weights
def test_non_finite_weights_in_a_model_file_are_refused(tmp_path):
    """Was: loaded silently (NaN logits; a float64 1e300 became inf in float32)."""
    p = _small_file(tmp_path / "nan.safetensors", lambda sd: sd["W_Q"].view(-1).__setitem__(5, float("nan")))
    with pytest.raises(ModelFileError, match=r"nan.safetensors: tensor W_Q has non-finite values \(1 NaN, 0 inf"):
        cw.load(p)
    p = _small_file(tmp_path / "big.safetensors", lambda sd: sd["W_E"].view(-1).__setitem__(0, 1e300),
                    dtype=torch.float64)
    with pytest.raises(ModelFileError, match=r"big.safetensors: tensor W_E has non-finite values \(0 NaN, 1 infinite, "
                                             r"after conversion from torch.float64 to torch.float32"):
        cw.load(p)
    assert cw.load(p, dtype=torch.float64).W_E[0, 0] == 1e300  # finite where it fits: checked after the cast
    p = _small_file(tmp_path / "half.safetensors", lambda sd: sd["W_U"].view(-1).__setitem__(3, 1e6))
    with pytest.raises(ModelFileError, match=r"tensor W_U has non-finite .*from torch.float32 to torch.float16"):
        cw.load(p, dtype=torch.float16)


def test_non_finite_weights_in_a_checkpoint_are_refused(ckpt, tmp_path):
    """Was: a NaN model.norm.weight converted silently (eager and lazy)."""
    _rewrite(ckpt, lambda sd: sd["model.norm.weight"].fill_(float("nan")))
    msg = re.escape(f"{ckpt / 'model.safetensors'}: tensor model.norm.weight has non-finite values (48 NaN")
    with pytest.raises(ModelFileError, match=msg):
        cw.from_hf(str(ckpt))
    lm = cw.from_hf(str(ckpt), lazy=True, cache_dir=tmp_path / "c")  # opening reads no tensor data
    with pytest.raises(ModelFileError, match=msg):
        lm.layer_weights(0)
    # float64 weights beyond float32's range: refused where they are converted to float32
    d = _save(ta.hf_model("llama", torch.float64), tmp_path / "f64")
    _rewrite(d, lambda sd: sd["model.layers.1.self_attn.q_proj.weight"].view(-1).__setitem__(0, 1e300))
    assert cw.from_hf(str(d)).W_Q.dtype == torch.float64  # stored dtype: fine
    with pytest.raises(ModelFileError, match=r"tensor W_Q \(converted\) has non-finite values \(0 NaN, 1 infinite, "
                                             r"after conversion from torch.float64 to torch.float32"):
        cw.from_hf(str(d), dtype=torch.float32)
    lm = cw.from_hf(str(d), lazy=True, cache_dir=tmp_path / "c")
    lm.layer_weights(0)
    with pytest.raises(ModelFileError, match=r"W_Q \(converted\) has non-finite"):
        lm.layer_weights(1)


# ------------------------------------------------------------------ 8: errors that named neither file nor tensor
def test_wrong_tensor_shape_named_with_its_file(ckpt, tmp_path):
    """Was: RuntimeError "shape '[6, 8, 48]' is invalid for input of size 1440" from a reshape."""
    _rewrite(ckpt, lambda sd: sd.__setitem__("model.layers.1.self_attn.q_proj.weight", torch.zeros(30, 48)))
    msg = (f"^{re.escape(str(ckpt / 'model.safetensors'))}: from_hf: llama tensor "
           r"'model.layers.1.self_attn.q_proj.weight' has shape \(30, 48\), the config \(.*\) requires \(48, 48\)$")
    with pytest.raises(ModelFileError, match=msg):
        cw.from_hf(str(ckpt))
    with pytest.raises(ModelFileError, match=msg):
        cw.from_hf(str(ckpt), lazy=True, cache_dir=tmp_path / "c")  # at open: every shape is checked
    gpt2 = tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=50, n_positions=16))
    sd = dict(gpt2.state_dict())
    sd["transformer.h.1.attn.c_proj.weight"] = torch.zeros(32, 30)
    with pytest.raises(ConversionError, match=r"transformer.h.1.attn.c_proj.weight has shape \(32, 30\), "
                                              r"expected \(32, 32\)") as e:
        cw.from_hf(sd, config=gpt2.config)
    assert e.value.tensor == "transformer.h.1.attn.c_proj.weight"


@pytest.mark.parametrize("index, match", [
    ('{"metadata": {}, "weight_map": ', "not a readable shard index \\(truncated or corrupted\\?\\)"),
    ('{"metadata": {}}', "not a shard index \\(no 'weight_map'"),
    ('{"weight_map": ["model.safetensors"]}', "'weight_map' must map tensor names to shard file names"),
    ('{"weight_map": {"model.norm.weight": "../elsewhere.safetensors"}}', "'weight_map' must map"),
    ('{"weight_map": {"model.norm.weight": "nope.safetensors"}}', "names the shard 'nope.safetensors'"),
])
def test_bad_shard_index_is_a_model_file_error(ckpt, index, match):
    """Was: a bare JSONDecodeError / KeyError 'weight_map' / FileNotFoundError."""
    (ckpt / "model.safetensors.index.json").write_text(index)
    with pytest.raises(ModelFileError, match=f"{re.escape(str(ckpt / 'model.safetensors.index.json'))}: {match}"):
        cw.from_hf(str(ckpt))


def test_absurd_header_shape_is_a_model_file_error(tmp_path):
    """Was: TypeError "Overflow when unpacking long" for a zero-size tensor of shape [0, 10**30]."""
    p = _small_file(tmp_path / "m.safetensors")
    data = p.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    header["W_E"]["shape"], header["W_E"]["data_offsets"] = [0, 10**30], [0, 0]
    raw = json.dumps(header).encode()
    p.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])
    msg = re.escape(f"m.safetensors: tensor W_E has shape [0, {10**30}], too large for any tensor")
    with pytest.raises(ModelFileError, match=msg):
        cw.load(p)
    with pytest.raises(ModelFileError, match=msg):
        read_safetensors(p)
