"""The shipped models: they load offline by name, their cards' claims hold when recomputed, the
check fails loudly when a claim does not hold, and the whole zoo stays small."""

from __future__ import annotations

import json
import math
import shutil
import socket

import pytest
import torch

import circwidgets as cw
from circwidgets import zoo
from circwidgets.zoo.build import ClaimFailed, check

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # torch on one thread per test, then restored
EXPECTED = {"toy-0l-code", "toy-1l-code", "toy-1l-trigrams", "toy-2l-induction", "toy-2l-code", "toy-2l-rotary"}
SHIPPED = zoo.list()


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*a, **k):
        raise OSError("network access in a test that must work offline")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_the_six_models_ship():
    assert EXPECTED <= set(SHIPPED), f"missing: {sorted(EXPECTED - set(SHIPPED))}"


def test_zoo_is_small_and_float16():
    from safetensors import safe_open

    total = sum(p.stat().st_size for p in zoo.MODELS_DIR.glob("*.safetensors"))
    assert total < 60e6, f"zoo is {total / 1e6:.1f} MB (the budget: 60 MB, snapshots included)"
    for name in SHIPPED:
        with safe_open(str(zoo.path(name)), framework="pt") as f:
            assert all(f.get_slice(k).get_dtype() == "F16" for k in f.keys()), name


@pytest.mark.parametrize("name", SHIPPED)
def test_model_loads_offline_and_its_claims_hold(name, no_network):
    m = cw.load(name)
    assert m.cfg.name == name and m.W_E.dtype == torch.float32
    c = zoo.card(name)
    for key in ("description", "architecture", "data", "training", "final", "notable_heads", "claims"):
        assert key in c, key
    assert c["claims"], "a card without claims checks nothing"
    assert c["training"]["steps"] > 0 and c["training"]["tokens"] > 0
    if "code" in name:  # the stdlib models carry their tokenizer and their data's fingerprint
        assert m.tokenizer is not None and len(c["data"]["corpus_sha256"]) == 64
        assert m.to_str_tokens("def f(self):")[0] == "<|endoftext|>"
    results = check(name, verbose=False)
    assert all(r["ok"] for r in results)
    assert "| claim |" in c.to_markdown()


def test_shipped_snapshots_load_and_carry_their_metrics():
    for name in SHIPPED:
        snaps = zoo.snapshots(name)
        for step, p in snaps:
            m = cw.load(p)
            assert m.cfg == cw.load(name).cfg
            assert json.loads(m.metadata["metrics"])[-1]["step"] <= step
        assert [s for s, _ in snaps] == sorted(s for s, _ in snaps)
    # at least 16, log-spaced from the start to the end of training: before, during and after the phase change
    # (the last point may be the shipped model itself: its final snapshot would be the same weights)
    steps = zoo.training_run("toy-2l-code").steps
    assert len(steps) >= 16 and steps[0] == 0 and steps[-1] == zoo.card("toy-2l-code")["training"]["steps"], steps
    ratios = [b / a for a, b in zip(steps[1:], steps[2:])]
    assert max(ratios) < 2.5, ratios


def test_unknown_name_lists_the_available_models():
    with pytest.raises(KeyError, match="available") as e:
        zoo.path("toy-99l-nothing")
    for name in SHIPPED:
        assert name in str(e.value)
    with pytest.raises(KeyError, match="available"):
        cw.load("toy-99l-nothing")
    with pytest.raises(KeyError, match="available"):
        zoo.card("toy-99l-nothing")
    assert cw.zoo.list() == SHIPPED  # reachable as an attribute of the package


def test_targets_are_what_the_cards_check_and_misses_are_stated():
    """No card checks a claim against a threshold lowered to its measurement: every card's claims are the
    claim specifications of `zoo.build.SPECS` (same ids, functions, comparisons, targets, texts), a claim with a
    target is compared with that target, and its card states whether it is met (toy-2l-code's misses: said so)."""
    from circwidgets.zoo.build import SPECS
    from circwidgets.zoo.claims import OPS

    for name in SHIPPED:
        stated = zoo.card(name)["claims"]
        assert [cl["id"] for cl in stated] == [sp["id"] for sp in SPECS[name]], name
        for cl, sp in zip(stated, SPECS[name]):
            for k in ("fn", "op", "target", "tol", "text"):
                assert cl[k] == sp[k], (name, cl["id"], k, cl[k], sp[k])
            assert sp["args"].items() <= cl["args"].items(), (name, cl["id"])

    for name in SHIPPED:
        c = zoo.card(name)
        md = c.to_markdown()
        for cl in c["claims"]:
            assert "threshold" not in cl, (name, cl["id"])
            if cl["target"] is None:
                assert cl["target_met"] is None
                continue
            assert cl["target_met"] == OPS[cl["op"]](cl["measured"], cl["target"]), (name, cl["id"])
            assert f"{cl['op']} {cl['target']:g}: " + ("met" if cl["target_met"] else "**missed**") in md
    lecture = zoo.card("toy-2l-code")
    missed = {cl["id"] for cl in lecture["claims"] if cl["target_met"] is False}
    assert missed == {f"induction_len{n}" for n in (10, 23, 50, 100)} | {"repeated_loss_len10", "repeated_loss_len100"}
    assert lecture["notes"].startswith("Stated misses") and "induction >= 0.8" in lecture["notes"]
    assert "repeated copy < 1 nat" in lecture["notes"]
    # where its one norm sits is on the card and in its summary (a final LayerNorm only: the heads read the raw stream)
    assert lecture["architecture"]["normalization"] == "LN" and lecture["architecture"]["pre_norm"] is False
    assert "normalisation: LN (final, before the unembedding, only)" in lecture.to_markdown()


def test_each_card_is_its_recipe():
    """A card's command (`python -m circwidgets.train NAME`) trains what the card describes: the recipe's
    model and training config equal the card's architecture and the config its run used (a recipe changed
    while the zoo still ships the old model, or a model shipped from a run with overrides the recipe lacks,
    fails here)."""
    import dataclasses

    from circwidgets.train import recipes
    from circwidgets.train.trainer import TrainConfig

    defaults = dataclasses.asdict(TrainConfig())  # a key a card lacks was not yet a field: its run used the default
    for name in SHIPPED:
        c = zoo.card(name)
        r = recipes.get(c["training"]["recipe"])
        for k, v in c["architecture"].items():
            assert r.model.get(k, v) == v, (name, k, r.model.get(k), v)
        used = c["training"]["config"]
        for k, v in dataclasses.asdict(TrainConfig(**r.train)).items():
            want = used.get(k, json.loads(json.dumps(defaults[k])))
            assert json.loads(json.dumps(v)) == want, (name, k, v, want)
        # and the shipped file is the recipe's architecture, every field the recipe sets (the card lists a few)
        cfg = cw.load(name).cfg
        for k, v in r.model.items():
            assert getattr(cfg, k) == v, (name, k, getattr(cfg, k), v)


def test_restate_measures_the_shipped_file_again(card_copy, monkeypatch):
    """`--restate` rewrites a card's claims from the shipped file and statistics as SPECS states them: on an
    unchanged spec it reproduces the card (within each claim's tolerance); on a changed target it restates
    met / missed, and `check` agrees with the rewritten card."""
    from circwidgets.zoo import build

    monkeypatch.setattr(build, "CARDS_DIR", zoo.CARDS_DIR)
    name = "toy-0l-code"
    before = zoo.card(name)
    after = build.restate(name)
    assert [c["id"] for c in after["claims"]] == [c["id"] for c in before["claims"]]
    for a, b in zip(after["claims"], before["claims"]):
        assert abs(a["measured"] - b["measured"]) <= b["tol"] and a["target_met"] == b["target_met"]
    assert {k: v for k, v in after.items() if k != "claims"} == {k: v for k, v in before.items() if k != "claims"}
    spec = [dict(sp) for sp in build.SPECS[name]]
    spec[0]["target"] = 0.99  # beyond the model: restated as missed, and check accepts the stated miss
    monkeypatch.setitem(build.SPECS, name, spec)
    c = build.restate(name, notes="restated")
    assert c["claims"][0]["target_met"] is False and zoo.card(name)["notes"] == "restated"
    check(name, verbose=False)


@pytest.fixture
def card_copy(tmp_path, monkeypatch):
    """A writable copy of the zoo; returns write(name, card) for edited cards."""
    cards, models = tmp_path / "cards", tmp_path / "models"
    shutil.copytree(zoo.CARDS_DIR, cards)
    shutil.copytree(zoo.MODELS_DIR, models)
    monkeypatch.setattr(zoo, "CARDS_DIR", cards)
    monkeypatch.setattr(zoo, "MODELS_DIR", models)
    return lambda name, c: (cards / f"{name}.json").write_text(json.dumps(c))


@pytest.mark.skipif("toy-1l-trigrams" not in SHIPPED, reason="no shipped models yet")
def test_check_fails_loudly_when_a_claim_breaks(card_copy, capsys):
    name = "toy-1l-trigrams"  # the quickest card to check; its first claim has a target
    c = zoo.card(name)
    cl = c["claims"][0]
    assert cl["target"] is not None and cl["op"] == ">="
    # a target beyond the model while the card says "met": fails, naming the target
    cl["target"], cl["target_met"] = cl["measured"] + 0.5, True
    card_copy(name, c)
    with pytest.raises(ClaimFailed, match=rf"{cl['id']}.*target >= .* missed, the card says met"):
        check(name, verbose=False)
    from circwidgets.zoo.__main__ import main

    assert main(["--check", name]) == 1
    assert "CLAIMS FAILED" in capsys.readouterr().err
    # the same target stated as missed: the check holds (the miss is on the card, the target unchanged)
    cl["target_met"] = False
    card_copy(name, c)
    assert all(r["ok"] for r in check(name, verbose=False))
    assert "**missed**" in zoo.card(name).to_markdown()
    # stated as missed but met: fails too (the card must say what is true)
    cl["target"] = cl["measured"] - 0.5
    card_copy(name, c)
    with pytest.raises(ClaimFailed, match="met, the card says missed"):
        check(name, verbose=False)
    # a claim whose status is right but whose number drifted from the card's also fails
    cl["target_met"] = True
    cl["measured"] += 10 * cl["tol"] + 0.1
    cl["target"] = cl["measured"] - 1.0
    card_copy(name, c)
    with pytest.raises(ClaimFailed, match="drifted"):
        check(name, verbose=False)


def _planted_rotary_previous_head(peak: int) -> cw.Transformer:
    """Two-layer rotary model whose L0H1 scores query i against key j as
    8 cos(i - j - peak) + 8 cos(0.01 (i - j - peak)) for every token pair (a constant embedding direction read
    by W_Q and W_K on the first two rotation pairs, the key rotated by `peak` positions); other heads zero."""
    from circwidgets.model.testing import random_model

    m = random_model(n_layers=2, d_model=8, n_heads=2, d_head=4, d_vocab=20, n_ctx=64, positional="rotary",
                     attn_only=True, normalization=None, seed=3)
    with torch.no_grad():
        m.W_E[:, 0] = 1.0
        m.W_E[:, 1:] *= 0.1
        m.W_Q.zero_()
        m.W_K.zero_()
        # rotate-half layout, d_head 4: pairs (0, 2) at frequency 1 and (1, 3) at 10000^(-1/2) = 0.01
        for dim, other, freq in ((0, 2, 1.0), (1, 3, 0.01)):
            m.W_Q[0, 1, 0, dim] = 4.0
            m.W_K[0, 1, 0, dim] = 4.0 * math.cos(peak * freq)
            m.W_K[0, 1, 0, other] = 4.0 * math.sin(peak * freq)
    return m


@pytest.mark.parametrize("peak", [1, 3])
def test_rotary_offset_peak_claim_finds_the_planted_offset(peak):
    from circwidgets.zoo.claims import prev_head_offset_peak

    m = _planted_rotary_previous_head(peak)
    # the model's own attention agrees: at offset `peak` the planted head puts most weight
    _, cache = m.run_with_cache(torch.randint(1, 20, (1, 40), generator=torch.Generator().manual_seed(0)))
    pat = cache["blocks.0.attn.hook_pattern"][0, 1]
    assert int((torch.arange(40)[:, None] - pat.argmax(-1)[:, None]).squeeze()[peak + 5:].mode().values) == peak
    assert int(cw.engine.offset_profile(m, range(64))[0, 1].argmax()) == peak
    # the claim reads the strongest previous-token head's profile: the planted head when it looks one back
    # (peak 1 met); a head looking 3 back is not a previous-token head, and the claim does not report 1
    got = prev_head_offset_peak(m, {}, layer=0, n_seqs=4)
    assert (got == 1.0) == (peak == 1), got


@pytest.mark.parametrize("reads", ["previous", "other"])
def test_rotary_kcomposition_claims_follow_what_the_induction_head_reads(reads):
    """L0H1 looks one back (planted, as above) and writes only along residual dim 4 (rank one), L0H0 only into
    dims 0..3; both layer-1 heads read their keys from one of those. The claims must name the previous-token head
    as the induction head's K-composition source (peak 1, far above chance) exactly when the keys read its output."""
    from circwidgets.zoo.claims import kcomp_prev_over_chance, kcomp_source_offset_peak

    m = _planted_rotary_previous_head(1)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        m.W_O[0, 0, :, 4:] = 0.0
        m.W_O[0, 1] = 0.0
        m.W_O[0, 1, :, 4] = torch.randn(4, generator=g, dtype=m.W_O.dtype)
        m.W_Q[1] = torch.randn(2, 8, 4, generator=g, dtype=m.W_Q.dtype)
        m.W_K[1] = 0.0
        rows = slice(4, 5) if reads == "previous" else slice(0, 4)  # the residual dims the keys read
        m.W_K[1, :, rows] = torch.randn(2, rows.stop - rows.start, 4, generator=g, dtype=m.W_K.dtype)
    k = cw.engine.composition_scores(m, "k", offset=[9, 22, 49, 99])[0, :, 1]  # [head1, head2]
    source = 1 if reads == "previous" else 0
    assert bool((k[source] > 0.1).all()) and bool((k[1 - source] < 1e-6).all())  # the planted structure holds
    peak = kcomp_source_offset_peak(m, {}, n_seqs=4)
    ratio = kcomp_prev_over_chance(m, {}, n_seqs=4)
    if reads == "previous":
        assert peak == 1.0 and ratio > 2.0, (peak, ratio)
    else:
        assert peak != 1.0 and ratio < 1e-3, (peak, ratio)


def test_build_ships_snapshots_without_duplicating_the_final_model(card_copy, monkeypatch, tmp_path):
    """`--build` with snapshot steps copies every snapshot but the final one, whose weights are the shipped
    model's; `training_run` gives every step, the last from the model file, with identical weights."""
    from circwidgets.train import recipes
    from circwidgets.zoo import build

    monkeypatch.setattr(build, "CARDS_DIR", zoo.CARDS_DIR)
    monkeypatch.setattr(build, "MODELS_DIR", zoo.MODELS_DIR)
    run = tmp_path / "run"
    tr = recipes.run("toy-2l-induction", steps=60, out=run, progress=False, n_snapshots=4)
    steps = tr.config.snapshot_steps()
    assert steps[-1] == 60 and len(steps) >= 3
    c = build.build("toy-2l-induction", run, snapshot_steps=steps)
    assert c["snapshots"] == [f"models/toy-2l-induction.step{s:06d}.safetensors" for s in steps[:-1]]
    assert [s for s, _ in zoo.snapshots("toy-2l-induction")] == steps[:-1]
    hist = zoo.training_run("toy-2l-induction")
    assert hist.steps == steps and hist.snapshots[-1].path == zoo.path("toy-2l-induction")
    last = cw.load(run / "snapshots" / "step_000060.safetensors")
    shipped = cw.load("toy-2l-induction")
    for (n, p), (_, q) in zip(last.named_parameters(), shipped.named_parameters()):
        assert torch.equal(p.half().float(), q), n  # the zoo ships float16 (this recipe snapshots float32)


def test_build_refuses_reference_data_with_another_tokenizer(tmp_path):
    """A run's reference statistics must come from the corpus it was trained on: the code corpus's two splits
    train two BPEs, and the other one's statistics would be read in the wrong token ids."""
    from circwidgets.zoo.build import _check_same_corpus

    (tmp_path / "manifest.json").write_text(json.dumps({"tokenizer_sha256": "a" * 64, "vocab_size": 320}))
    _check_same_corpus(tmp_path / "model.safetensors", {"tokenizer_sha256": "a" * 64}, tmp_path)
    _check_same_corpus(tmp_path / "model.safetensors", {"task": "repeat"}, tmp_path)  # synthetic data: no BPE
    with pytest.raises(ValueError, match="tokenizer sha256 aaaa.*trained with bbbb"):
        _check_same_corpus(tmp_path / "model.safetensors", {"tokenizer_sha256": "b" * 64}, tmp_path)


@pytest.mark.parametrize("args, message", [
    (["--build", "../escaped", "--run", "{run}"],
     "--build '../escaped': a model name is letters, digits, '.', '_' and '-' (e.g. toy-2l-induction)"),
    (["--build", "toy-1l-trigrams", "--run", "{tmp}/no-run"],
     "--run {tmp}/no-run: not a finished training run directory (it has no model.safetensors)"),
    (["--build", "toy-1l-trigrams", "--run", "{run}/model.safetensors"],
     "--run {run}/model.safetensors: not a finished training run directory (it has no model.safetensors)"),
    (["--build", "toy-1l-trigrams", "--run", "{run}", "--snapshots", "a,b"],
     "--snapshots 'a,b': expected comma-separated snapshot steps, e.g. 0,200,1000"),
    (["--restate", "no-such-model"], "--restate 'no-such-model': no shipped model of that name; available: "),
])
def test_cli_bad_names_and_paths_are_usage_errors_that_write_nothing(tmp_path, monkeypatch, capsys, args, message):
    """Used to end in raw tracebacks (ModelFileError, NotADirectoryError, ValueError, KeyError); a --build name
    with '..' wrote its files outside the zoo's folders."""
    from circwidgets.zoo import __main__ as zoo_main
    from circwidgets.zoo import build as zoo_build

    run = tmp_path / "run"
    run.mkdir()
    cw.save(cw.load("toy-1l-trigrams"), run / "model.safetensors")
    zoo_dir = tmp_path / "zoo"
    monkeypatch.setattr(zoo_build, "MODELS_DIR", zoo_dir / "models")
    monkeypatch.setattr(zoo_build, "CARDS_DIR", zoo_dir / "cards")
    fill = {"run": str(run), "tmp": str(tmp_path)}
    with pytest.raises(SystemExit) as e:
        zoo_main.main([a.format(**fill) for a in args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"python -m circwidgets.zoo: error: {message.format(**fill)}" in err, err
    assert "Traceback" not in err and not zoo_dir.exists()
