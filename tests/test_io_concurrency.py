"""Parallel save/load of one path never yields a mixed or falsely corrupt model (issue 14, item 1)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch

import circwidgets as cw
from circwidgets.model import ModelConfig, Transformer

ROOT = Path(__file__).resolve().parents[1]

# Two models of different shapes whose W_E is a constant marker: a torn read (one version's config,
# the other's weights) is either a shape error or a marker that disagrees with the config's name.
WRITER = textwrap.dedent("""
    import sys, time, torch
    import circwidgets as cw
    from circwidgets.model import ModelConfig, Transformer
    torch.set_num_threads(1)
    def make(name, d_vocab, marker):
        m = Transformer(ModelConfig(n_layers=1, d_model=8, n_heads=2, d_head=4, d_vocab=d_vocab, n_ctx=8,
                                    name=name), seed=0)
        with torch.no_grad():
            m.W_E.fill_(marker)
        return m
    models = [make("model-A", 13, 1.0), make("model-B", 17, 2.0)]
    path, seconds = sys.argv[1], float(sys.argv[2])
    print("ready", flush=True)
    end, i = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        cw.save(models[i % 2], path)
        i += 1
    print(i)
""")
MARKERS = {"model-A": (13, 1.0), "model-B": (17, 2.0)}


def test_parallel_save_and_load_never_mixes_versions(tmp_path):
    path = tmp_path / "m.safetensors"
    first = Transformer(ModelConfig(n_layers=1, d_model=8, n_heads=2, d_head=4, d_vocab=13, n_ctx=8,
                                    name="model-A"), seed=0)
    with torch.no_grad():
        first.W_E.fill_(1.0)
    cw.save(first, path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "3"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    bad, seen, loads = [], set(), 0
    try:
        assert writer.stdout.readline().strip() == "ready"  # imports done (slow on a busy machine)
        end = time.monotonic() + 30  # the writer stops by itself after 3 s of saving
        while writer.poll() is None and time.monotonic() < end:
            try:
                m = cw.load(path)
            except Exception as e:  # noqa: BLE001 - any error here is the defect under test
                bad.append(f"{type(e).__name__}: {e}")
                continue
            loads += 1
            name = m.cfg.name
            seen.add(name)
            d_vocab, marker = MARKERS[name]
            if m.cfg.d_vocab != d_vocab or float(m.W_E[0, 0].detach()) != marker:
                bad.append(f"torn read: config {name} with W_E[0,0] = {float(m.W_E[0, 0].detach())}")
    finally:
        writer.kill() if writer.poll() is None else None
        out, err = writer.communicate()
    assert writer.returncode in (0, -9), err
    assert not bad, f"{len(bad)} bad loads of {loads + len(bad)}: {bad[:3]}"
    # the race was really exercised: many loads while both versions were being written
    assert loads >= 20 and seen == {"model-A", "model-B"}, (loads, seen, out)
    assert not list(tmp_path.glob("*.tmp"))
