"""The code corpus pipeline on a tiny fixture (no download): pinned archives are verified by
sha256, duplicates and generated files are dropped, the held-out split is stratified by package and
a deterministic function of the files, the build is reproducible, and byte-fragment tokens get readable labels."""

from __future__ import annotations

import hashlib
import json
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from circwidgets.model import Tokenizer
from circwidgets.model.tokenizer import token_label
from circwidgets.train import code_corpus as cc
from circwidgets.train.corpus import corpus_summary, train_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # torch on one thread per test, then restored

MOD = "import os\n\n\ndef join(a, b):\n    return os.path.join(a, b)\n"
# the same code re-indented, with a comment and blank lines: a near duplicate
NEAR = "# a copy\nimport os\n\n\n\ndef join(a, b):\n        return os.path.join(a, b)\n"


def _wheel(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def _fixture(tmp: Path) -> tuple[dict, Path, Path]:
    """Pins for two fake wheels (already in the cache) and a fake stdlib."""
    cache = tmp / "cache"
    cache.mkdir()
    body = "".join(f"def f{i}(x):\n    return x * {i} + len('{i}')\n\n" for i in range(40))
    a = _wheel(cache / "alpha-1.0-py3-none-any.whl", {
        "alpha/__init__.py": b"from .core import run\n",
        "alpha/core.py": MOD.encode(),
        "alpha/copy_of_core.py": MOD.encode(),  # exact duplicate
        "alpha/near.py": NEAR.encode(),  # near duplicate
        "alpha/tests/test_core.py": b"def test_x():\n    assert 1\n",  # test folder: excluded
        "alpha/test_more.py": b"x = 1\n",  # test_ file: excluded
        "alpha/table.py": ("DATA = [" + ", ".join(str(i) for i in range(3000)) + "]\n").encode(),  # generated
        "alpha/latin1.py": "s = 'caf\xe9'\n".encode("latin-1"),  # not UTF-8
        "alpha/body.py": body.encode(),
        "alpha-1.0.dist-info/METADATA": b"Name: alpha\n",
    })
    b = _wheel(cache / "beta-2.0-py3-none-any.whl", {
        f"beta/m{i}.py": f"class B{i}:\n    '''Arrow \u2192 and caf\u00e9 {i}.'''\n    value = {i}\n".encode()
        for i in range(60)
    })
    pins = {"format": "circwidgets-corpus-pins-1", "stdlib_licence": "PSF-2.0", "packages": [
        {"name": "alpha", "version": "1.0", "licence": "MIT", "filename": a.name, "sha256": cc.sha256_file(a)},
        {"name": "beta", "version": "2.0", "licence": "BSD-3-Clause", "filename": b.name, "sha256": cc.sha256_file(b)},
    ]}
    lib = tmp / "lib"
    (lib / "json").mkdir(parents=True)
    (lib / "json" / "__init__.py").write_text("import re\n\n\ndef dumps(obj):\n    return repr(obj)\n")
    (lib / "shutil.py").write_text(MOD)  # same as alpha/core.py: the stdlib copy (first) is kept
    return pins, cache, lib


def _no_pip(monkeypatch):
    def fail(*a, **k):
        raise AssertionError(f"pip was called: {a}")

    monkeypatch.setattr(cc.subprocess, "run", fail)


def test_cached_archives_are_verified_and_a_bad_download_is_refused(tmp_path, monkeypatch):
    pins, cache, _ = _fixture(tmp_path)
    pin = pins["packages"][0]
    _no_pip(monkeypatch)
    assert cc.fetch_archive(pin, cache) == cache / pin["filename"]  # sha256 matches: no download
    with pytest.raises(cc.CorpusIntegrityError, match="sha256"):
        cc.verify_archive(cache / pin["filename"], {**pin, "sha256": "0" * 64})
    with pytest.raises(cc.CorpusIntegrityError, match="pins"):
        cc.verify_archive(cache / pins["packages"][1]["filename"], pin)

    # a corrupted cached copy is downloaded again; a download with another sha256 is an error
    (cache / pin["filename"]).write_bytes(b"corrupted")
    calls = []

    def fake_pip(cmd, check):
        calls.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        (dest / pin["filename"]).write_bytes(b"something else")
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(cc.subprocess, "run", fake_pip)
    with pytest.raises(cc.CorpusIntegrityError, match="sha256"):
        cc.fetch_archive(pin, cache)
    assert len(calls) == 1 and f"{pin['name']}=={pin['version']}" in calls[0] and "--no-deps" in calls[0]
    assert (cache / pin["filename"]).read_bytes() == b"corrupted"  # the bad download never replaced it


def test_dedup_and_filters(tmp_path):
    pins, cache, lib = _fixture(tmp_path)
    srcs = list(cc.stdlib_sources(lib)) + list(cc.wheel_sources(cache / pins["packages"][0]["filename"], "alpha"))
    keys = [k for k, _ in srcs]
    assert "alpha/tests/test_core.py" not in keys and "alpha/test_more.py" not in keys
    assert not any("dist-info" in k for k in keys)
    kept, stats = cc.dedup_and_filter(srcs)
    kk = [k for k, _, _ in kept]
    assert "stdlib/shutil.py" in kk and "alpha/core.py" not in kk  # the first copy wins
    assert "alpha/copy_of_core.py" not in kk and "alpha/near.py" not in kk
    assert "alpha/table.py" not in kk and "alpha/latin1.py" not in kk
    assert stats["exact_duplicate"] == 2 and stats["near_duplicate"] == 1
    assert stats["generated"] == 1 and stats["not_utf8"] == 1
    assert kk == [k for k in keys if k in kk]  # input order kept
    for _, text, h in kept:
        assert hashlib.sha256(text.encode()).hexdigest() == h
    assert cc.normalised(NEAR) == cc.normalised(MOD) != cc.normalised(MOD.replace("join", "split"))


def test_heldout_split_is_stratified_by_package_and_independent_of_order():
    rng = np.random.default_rng(0)
    sizes = {"big": 400, "mid": 60, "small": 5, "single": 1}
    docs = [(f"{pkg}/mod/file_{i}.py", "x" * int(rng.integers(50, 5000))) for pkg, n in sizes.items() for i in range(n)]
    held = cc.heldout_keys(docs)
    assert held == cc.heldout_keys(docs[::-1]) == cc.heldout_keys(rng.permutation(np.array(docs, dtype=object)))
    for pkg in sizes:
        files = [(k, len(t)) for k, t in docs if k.startswith(pkg + "/")]
        total, out = sum(n for _, n in files), sum(n for k, n in files if k in held)
        biggest = max(n for _, n in files)
        assert len([k for k, _ in files if k not in held]) >= 1  # every package keeps a training file
        if len(files) > 1:  # at least the share, overshooting by less than one file
            assert 0.03 * total <= out < 0.03 * total + biggest, pkg
    assert not cc.heldout_keys(docs, per_mille=0)
    # a file's fate depends on its package's files, not on other packages
    assert {k for k in held if k.startswith("big/")} == {k for k in cc.heldout_keys(docs[:400]) if k.startswith("big/")}


def test_first_split_holds_out_files_by_hash_bucket_unstratified():
    """`split="file-hash"` is the first split: a file is held out iff its sha256(key) bucket
    is below the per mille, whatever the other files are; the default per mille is 20."""
    docs = [(f"{pkg}/m{i}.py", "x" * (i + 1)) for pkg in ("a", "b") for i in range(3000)]
    held = cc.heldout_keys(docs, split="file-hash")
    bucket = {k: int(hashlib.sha256(k.encode()).hexdigest()[:16], 16) % 1000 for k, _ in docs}
    assert held == {k for k, b in bucket.items() if b < 20}
    assert 60 < len(held) < 180  # ~2% of 6000 files
    assert held & {k for k, _ in docs[:3000]} == cc.heldout_keys(docs[:3000], split="file-hash")
    assert cc.heldout_keys(docs, 50, split="file-hash") > held
    with pytest.raises(ValueError, match="split 'by-size'"):
        cc.heldout_keys(docs, split="by-size")


def test_a_recipe_refuses_a_corpus_with_another_split(tmp_path, monkeypatch):
    """A data dir remembers its split, and a recipe trained on one split will not read the other unnoticed:
    the error names both and how to build or override; manifests written before the split was named are
    read by what they hold."""
    from circwidgets.train import recipes
    from circwidgets.train.corpus import ensure_data_dir

    pins, cache, lib = _fixture(tmp_path)
    _no_pip(monkeypatch)
    d = cc.prepare_code_data_dir(tmp_path / "fh", vocab_size=320, pins=pins, cache=cache, stdlib=lib, verbose=False,
                                 heldout_per_mille=300, split="file-hash")
    m = json.loads((d / "manifest.json").read_text())
    docs, _ = cc.collect_code_corpus(pins, cache, lib, verbose=False)
    assert m["split"] == "file-hash" and corpus_summary(m)["split"] == "file-hash"
    assert m["val_files"] and set(m["val_files"]) == cc.heldout_keys([(k, t) for k, t, _ in docs], 300, "file-hash")
    assert ensure_data_dir(d, 320, "pycode", "file-hash") == d
    with pytest.raises(ValueError, match="'file-hash' held-out split.*'package' split.*--split package"):
        ensure_data_dir(d, 320, "pycode", "package")
    old = {k: v for k, v in m.items() if k not in ("split", "heldout_split")}  # the first split's manifest
    assert cc.manifest_split(old) == "file-hash" and cc.manifest_split({**old, "heldout_split": "x"}) == "package"
    root = recipes.DEFAULT_DATA_ROOT
    assert recipes.default_data_dir(4096, "pycode") == root / "pycode-bpe4096"
    assert recipes.default_data_dir(4096, "pycode", "file-hash") == root / "pycode-filehash-bpe4096"
    assert recipes.with_overrides(recipes.get("toy-2l-code"), {"split": "file-hash"}).split == "file-hash"


def test_prepare_is_reproducible_and_splits_by_file(tmp_path, monkeypatch):
    pins, cache, lib = _fixture(tmp_path)
    _no_pip(monkeypatch)
    kw = dict(vocab_size=320, pins=pins, cache=cache, stdlib=lib, verbose=False,
              heldout_per_mille=250)  # a tiny corpus needs a bigger share to hold any file out
    d1 = cc.prepare_code_data_dir(tmp_path / "d1", **kw)
    d2 = cc.prepare_code_data_dir(tmp_path / "d2", **kw)
    m1, m2 = (json.loads((d / "manifest.json").read_text()) for d in (d1, d2))
    for k in ("corpus_sha256", "tokenizer_sha256", "n_tokens", "files", "val_files"):
        assert m1[k] == m2[k], k
    for f in ("train.npy", "val.npy", "tokenizer.json"):
        assert (d1 / f).read_bytes() == (d2 / f).read_bytes(), f
    assert m1["source"] == "python-code" and m1["vocab_size"] == 320
    assert [p["licence"] for p in m1["packages"]] == ["MIT", "BSD-3-Clause"]
    keys = [k for k, _ in m1["files"]]
    docs, _ = cc.collect_code_corpus(pins, cache, lib, verbose=False)
    held = cc.heldout_keys([(k, t) for k, t, _ in docs], 250)
    assert m1["val_files"] == [k for k in keys if k in held] and {k.split("/")[0] for k in held} >= {"alpha", "beta"}
    assert m1["n_files_split"]["train"] + m1["n_files_split"]["val"] == m1["n_files"] == len(keys)
    train, val = (np.load(d1 / f) for f in ("train.npy", "val.npy"))
    assert train.dtype == np.uint16 and (train == 0).sum() == m1["n_files_split"]["train"]  # one BOS per file
    assert (val == 0).sum() == m1["n_files_split"]["val"] and len(val) == m1["n_tokens"]["val"]
    # held-out text is exactly the held-out files, tokenised
    tok = Tokenizer.from_json((d1 / "tokenizer.json").read_text())
    val_text = tok.decode(val.tolist())
    assert all(f"B{k.split('/m')[1][:-3]}:" in val_text for k in m1["val_files"] if k.startswith("beta/"))
    s = corpus_summary(m1)  # what model files record: packages, not thousands of file names
    assert "files" not in s and [p["name"] for p in s["packages"]] == ["alpha", "beta"]


def test_byte_fragment_tokens_get_readable_labels():
    texts = ["x = '\u2192 \u2190 \u00e9\u00e8 \u4e2d\u6587 \U0001f600' * 3\n"] * 50 + ["def f(a):\n    return a\n"] * 50
    backend = train_tokenizer(texts, 300)
    tok = Tokenizer(backend)
    labels = tok.id_to_str(list(range(backend.get_vocab_size())))
    assert not any("\ufffd" in s for s in labels)
    # a lone lead byte of a 3-byte character is an escape; a whole character decodes
    lead = backend.token_to_id("\u00e2")  # byte-level stand-in of 0xE2
    assert token_label(backend, lead) == "\\xe2"
    assert labels[0] == "<|endoftext|>"
    full = tok.encode("\u2192")
    assert "".join(tok.id_to_str(full)) in ("\u2192", "\\xe2\\x86\\x92") and len(full) >= 1
    if len(full) == 1:
        assert tok.id_to_str(full) == ["\u2192"]
    merged = [s for s in labels if "\\x" in s and len(s) > 4]
    assert merged or any(s.startswith("\\x") for s in labels)  # fragments exist and are escaped
    assert token_label(backend, 10**6) == "<1000000>"


def test_trainer_scores_induction_over_several_repeat_lengths():
    from circwidgets.model import ModelConfig, Transformer
    from circwidgets.train.tasks import CopyTask
    from circwidgets.train.trainer import TrainConfig, Trainer

    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=2, d_head=8, d_vocab=40, n_ctx=48, positional="shortformer",
                      bos_token_id=0)
    tc = TrainConfig(steps=1, batch_size=2, eval_every=1, eval_batches=1, icl_n_seqs=2, icl_seq_lens=(5, 11, 23))
    tr = Trainer(Transformer(cfg, seed=0), CopyTask(40, 48), tc, progress=False).train()
    rec = tr.history[-1]
    assert list(rec["induction_by_len"]) == ["5", "11", "23"] and list(rec["icl_repeated_by_len"]) == ["5", "11", "23"]
    assert abs(rec["icl_repeated"] - sum(rec["icl_repeated_by_len"].values()) / 3) < 1e-3
    assert TrainConfig.from_dict(json.loads(json.dumps(tc.__dict__))) == tc  # JSON lists back to tuples


def test_heldout_gap_claim_measures_each_split(tmp_path, monkeypatch):
    from circwidgets.model import ModelConfig, Transformer
    from circwidgets.train.trainer import lm_loss
    from circwidgets.zoo.build import loss_windows
    from circwidgets.zoo.claims import heldout_gap, heldout_loss

    pins, cache, lib = _fixture(tmp_path)
    _no_pip(monkeypatch)
    d = cc.prepare_code_data_dir(tmp_path / "d", vocab_size=320, pins=pins, cache=cache, stdlib=lib, verbose=False,
                                 heldout_per_mille=250)
    stats, info = loss_windows(d, n_ctx=12, n=6)
    train, val = (np.load(d / f) for f in ("train.npy", "val.npy"))
    for key, arr in (("train_windows", train), ("heldout_windows", val)):
        w = stats[key]
        assert w.shape == (6, 12) and (w[:, 0] == 0).all()
        text = arr.tobytes()  # every window's tokens are a contiguous stretch of its split
        assert all(np.asarray(row[1:], dtype=np.uint16).tobytes() in text for row in w.numpy())
    cfg = ModelConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, d_vocab=320, n_ctx=12, positional="shortformer",
                      bos_token_id=0)
    m = Transformer(cfg, seed=3)
    with torch.no_grad():
        ref = [lm_loss(m(stats[k].long()), stats[k].long()).item() for k in ("heldout_windows", "train_windows")]
    assert heldout_loss(m, stats) == pytest.approx(ref[0], rel=1e-5)
    assert heldout_gap(m, stats) == pytest.approx(ref[0] - ref[1], rel=1e-4, abs=1e-5)
    assert info["loss_windows"] == 6
