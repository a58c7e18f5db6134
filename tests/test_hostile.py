"""Hostile inputs and faults (issue 14): no silent wrong numbers, nothing torn, clear errors.

Each test names the defect it pins; every one failed on the code before the fix."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import circwidgets as cw
from circwidgets.model import ModelFileError, Transformer
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
