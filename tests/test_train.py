"""Trainer, tasks and corpus: loss falls, interrupt + resume is bit-for-bit the uninterrupted run,
checkpoints are atomic, synthetic tasks plant what they say, the corpus is reproducible."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from pathlib import Path

import pytest
import torch

import circwidgets as cw
from circwidgets.model import ModelConfig, Transformer
from circwidgets.train import corpus, recipes
from circwidgets.train.tasks import BigramTask, CopyTask, RepeatTask, SkipTrigramTask
from circwidgets.train.trainer import TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # torch on one thread per test, then restored
CFG = ModelConfig(n_layers=2, d_model=32, n_heads=2, d_head=8, d_vocab=24, n_ctx=16, positional="shortformer",
                  bos_token_id=0)


def _trainer(out=None, steps=40, task=None, **kw) -> Trainer:
    torch.manual_seed(0)
    tc = TrainConfig(**{"steps": steps, "batch_size": 8, "lr": 1e-2, "warmup": 5, "eval_every": 10,
                        "checkpoint_every": 1000, "eval_batches": 1, "icl_n_seqs": 2, "icl_seq_len": 7, **kw})
    return Trainer(Transformer(CFG, seed=0), task or BigramTask(24, 16, n_successors=2), tc, out_dir=out,
                   progress=False)


def _same_state(a: Trainer, b: Trainer) -> None:
    for (n, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters()):
        assert torch.equal(p, q), n
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    for i in sa:
        for k in sa[i]:
            assert torch.equal(torch.as_tensor(sa[i][k]), torch.as_tensor(sb[i][k])), (i, k)

    def strip(h):
        return [{k: v for k, v in r.items() if k != "time"} for r in h]

    assert strip(a.history) == strip(b.history)
    assert a.step == b.step and a.tokens_seen == b.tokens_seen


def test_loss_falls_on_a_markov_chain():
    tr = _trainer(steps=60).train()
    first, last = tr.history[0]["val_loss"], tr.history[-1]["val_loss"]
    # a chain with 2 successors per token: uniform is log(23) = 3.14, the chain's entropy < log 2
    assert first > 3.0 and last < first - 1.0, (first, last)
    assert [r["step"] for r in tr.history] == [0, 10, 20, 30, 40, 50, 60]
    assert len(tr.history[-1]["induction"]) == 2 and len(tr.history[-1]["induction"][0]) == 2


class _SigintAt(BigramTask):
    """A task that delivers a real SIGINT while drawing the batch of one step."""

    at: int = -1

    def batch(self, batch_size, seed, step):
        if step == self.at:
            os.kill(os.getpid(), signal.SIGINT)
        return super().batch(batch_size, seed, step)


class _SigtermAt(_SigintAt):
    """The same, with SIGTERM (`kill PID`, a machine shutting down)."""

    def batch(self, batch_size, seed, step):
        if step == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return BigramTask.batch(self, batch_size, seed, step)


def test_sigterm_stops_at_the_step_and_writes_the_checkpoint(tmp_path):
    """Was: SIGTERM killed the process and lost the steps since the last periodic checkpoint. Now it is an
    interrupt: the step in flight completes, the checkpoint holds it, the process lives on, and the
    handler in place before training is restored afterwards."""
    task = _SigtermAt(24, 16, n_successors=2)
    task.at = 17
    seen = []

    def before(signum, frame):  # in place of the default action (which would end the test run itself)
        seen.append(signum)

    original = signal.signal(signal.SIGTERM, before)
    try:
        part = _trainer(tmp_path / "part", task=task).train()
        assert signal.getsignal(signal.SIGTERM) is before
    finally:
        signal.signal(signal.SIGTERM, original)
    assert seen == [] and part.stopped_by == "interrupt" and part.step == 18
    resumed = _trainer(tmp_path / "part").load_checkpoint()
    assert resumed.step == 18


def test_interrupt_then_resume_equals_uninterrupted(tmp_path):
    full = _trainer(tmp_path / "full").train()
    task = _SigintAt(24, 16, n_successors=2)
    task.at = 17
    part = _trainer(tmp_path / "part", task=task).train()
    assert part.stopped_by == "interrupt" and part.step == 18  # the step in flight completes
    ck = tmp_path / "part" / "checkpoint.safetensors"
    assert ck.is_file()
    # the checkpoint is plain safetensors (no pickle) and holds the optimizer state
    from safetensors import safe_open

    with safe_open(str(ck), framework="pt") as f:
        keys = set(f.keys())
    assert "model.W_E" in keys and "optim.W_E.exp_avg_sq" in keys
    resumed = _trainer(tmp_path / "part")
    resumed.model.W_E.data.zero_()  # prove the weights come from the checkpoint
    resumed.load_checkpoint().train()
    _same_state(full, resumed)
    # the final model file loads with cw.load and carries the training record
    p = resumed.save_model(tmp_path / "m.safetensors")
    m = cw.load(p)
    assert json.loads(m.metadata["metrics"])[-1]["step"] == 40
    assert torch.equal(m.W_E, full.model.W_E)


def test_bfloat16_autocast_trains_resumes_exactly_and_evaluates_in_float32(tmp_path, monkeypatch):
    full = _trainer(tmp_path / "full", autocast="bfloat16").train()
    fp32 = _trainer(steps=40).train()
    # the same run to bfloat16 rounding: the loss falls as in float32, the weights differ (autocast is on)
    assert abs(full.history[-1]["val_loss"] - fp32.history[-1]["val_loss"]) < 0.1
    assert not torch.equal(full.model.W_Q, fp32.model.W_Q)
    assert all(p.dtype == torch.float32 for p in full.model.parameters())
    part = _trainer(tmp_path / "part", autocast="bfloat16").train(steps=17)
    part.save_checkpoint()
    resumed = _trainer(tmp_path / "part", autocast="bfloat16")
    resumed.load_checkpoint().train()
    _same_state(full, resumed)
    # a float32 run cannot continue a bfloat16 one (its past steps were computed differently)
    with pytest.raises(ValueError, match="cannot continue the checkpoint"):
        _trainer(tmp_path / "part").load_checkpoint()
    # evaluation runs outside autocast: it sees float32 logits
    seen = []
    orig = Transformer.forward

    def spy(self, *a, **k):
        out = orig(self, *a, **k)
        seen.append((torch.is_autocast_enabled("cpu"), out.dtype))
        return out

    monkeypatch.setattr(Transformer, "forward", spy)
    full.evaluate()
    assert seen and all(d == torch.float32 and not on for on, d in seen)
    with pytest.raises(ValueError, match="autocast"):
        TrainConfig(autocast="bf16")


def test_two_threads_train_the_same_weights_twice():
    # with 2 threads the embedding's backward pass added its gradients in a racy order: two runs differed
    # (~1e-9 after 5 steps at this size, 2e-2 after 100 steps of a lecture recipe); the trainer now runs each
    # step with deterministic algorithms on a CPU and restores the global flag afterwards
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cfg = ModelConfig(n_layers=1, d_model=32, n_heads=2, d_head=16, d_vocab=512, n_ctx=64, attn_only=True)
        runs = []
        for _ in range(2):
            tc = TrainConfig(steps=5, batch_size=16, lr=1e-2, eval_every=1000, checkpoint_every=1000, icl_n_seqs=1,
                             icl_seq_len=7, n_snapshots=0)
            runs.append(Trainer(Transformer(cfg, seed=0), BigramTask(512, 64), tc, progress=False).train())
        for (name, a), b in zip(runs[0].model.named_parameters(), runs[1].model.parameters()):
            assert torch.equal(a, b), name
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.set_num_threads(before)


def test_resume_refuses_a_different_config(tmp_path):
    _trainer(tmp_path / "a", steps=10).train()
    tr = Trainer(Transformer(CFG, seed=0), BigramTask(24, 16), TrainConfig(steps=10, batch_size=4),
                 out_dir=tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="cannot continue the checkpoint"):
        tr.load_checkpoint()


def test_wsd_schedule_holds_then_decays_linearly():
    c = TrainConfig(steps=100, lr=1.0, warmup=10, schedule="wsd", decay_steps=40, min_lr_frac=0.0)
    assert c.lr_at(0) == pytest.approx(0.1) and c.lr_at(9) == 1.0
    assert all(c.lr_at(s) == 1.0 for s in range(10, 61))  # the stable part is the constant schedule
    assert c.lr_at(70) == pytest.approx(0.75) and c.lr_at(80) == pytest.approx(0.5)
    assert c.lr_at(99) == pytest.approx(1 / 40)
    assert TrainConfig(steps=100, lr=1.0, warmup=10, schedule="wsd", decay_steps=40, min_lr_frac=0.2).lr_at(80) \
        == pytest.approx(0.6)
    for bad in (dict(schedule="linear"), dict(schedule="wsd"), dict(schedule="wsd", decay_steps=95),
                dict(min_lr_frac=-0.1), dict(snapshot_span=0)):
        with pytest.raises(ValueError, match=next(iter(bad)) if "decay" not in str(bad) else "decay_steps"):
            TrainConfig(steps=100, warmup=10, **bad)


def test_a_constant_lr_run_continues_into_a_decay_exactly(tmp_path):
    """The lecture models' path: a run planned as a long constant-lr run, continued from its checkpoint
    with a shorter warm-up / stable / decay plan, equals a run made with that plan from the start
    (weights, optimizer state, history, snapshot files)."""
    wsd = dict(schedule="wsd", decay_steps=15, min_lr_frac=0.0, n_snapshots=6, snapshot_span=80)
    fresh = _trainer(tmp_path / "fresh", **wsd).train()
    _trainer(tmp_path / "cont", steps=80, n_snapshots=6).train(steps=20)  # constant plan, stopped at 20
    cont = _trainer(tmp_path / "cont", **wsd)
    cont.load_checkpoint().train()
    _same_state(fresh, cont)
    snaps = sorted(p.name for p in (tmp_path / "fresh" / "snapshots").iterdir())
    assert snaps == sorted(p.name for p in (tmp_path / "cont" / "snapshots").iterdir())
    # the 80-step spacing, cut at 40, plus the final step
    assert [int(n[5:11]) for n in snaps] == [s for s in TrainConfig(steps=80, n_snapshots=6).snapshot_steps()
                                             if s <= 40] + [40]
    assert fresh.config.lr_at(24) == 1e-2 and fresh.config.lr_at(39) < 1e-3


def test_a_resume_may_not_rewrite_the_past(tmp_path):
    _trainer(tmp_path / "a", steps=400, n_snapshots=8).train(steps=120)  # snapshots so far: 0, 50, 70, 99
    # a decay that would have begun before step 120: the checkpoint was not trained with it
    late = _trainer(tmp_path / "a", steps=200, schedule="wsd", decay_steps=100, n_snapshots=8, snapshot_span=400)
    with pytest.raises(ValueError, match="lr schedule differs from the saved one before step 120"):
        late.load_checkpoint()
    # snapshots taken at the 400-step spacing cannot be re-spaced over 200 steps
    respaced = _trainer(tmp_path / "a", steps=200, schedule="wsd", decay_steps=50, n_snapshots=8)
    with pytest.raises(ValueError, match="snapshot steps"):
        respaced.load_checkpoint()
    ok = _trainer(tmp_path / "a", steps=200, schedule="wsd", decay_steps=50, n_snapshots=8, snapshot_span=400)
    assert ok.load_checkpoint().step == 120


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    tr = _trainer(tmp_path, steps=10).train()
    ck = tr.checkpoint_path
    before = ck.read_bytes()
    import safetensors.torch as st

    def broken_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(st, "save_file", broken_save)
    tr.step += 1
    with pytest.raises(OSError, match="disk full"):
        tr.save_checkpoint()
    assert ck.read_bytes() == before  # the old checkpoint is untouched
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temporary left behind


def test_time_limit_stops_and_records_final_eval(tmp_path):
    tr = _trainer(tmp_path, steps=10_000)
    tr.time_limit = 0.0
    tr.train()
    assert tr.stopped_by == "time_limit" and tr.step == 1 and tr.history[-1]["step"] == 1


# ------------------------------------------------------------------------------------- tasks
def test_batches_are_a_function_of_seed_and_step():
    for t in (BigramTask(20, 12), SkipTrigramTask(80, 32, n_rules=6, n_triggers=3, rules_per_seq=2),
              RepeatTask(50, 33, 2, 16), CopyTask(50, 40, 3, 8)):
        assert torch.equal(t.batch(4, 1, 7), t.batch(4, 1, 7))
        assert not torch.equal(t.batch(4, 1, 7), t.batch(4, 1, 8))
        assert not torch.equal(t.batch(4, 1, 7), t.batch(4, 2, 7))
        b = t.batch(4, 0, 0)
        assert b.shape == (4, t.n_ctx) and b.dtype == torch.long and (b[:, 0] == 0).all()
        assert b.min() >= 0 and b.max() < t.d_vocab


def test_bigram_chain_follows_its_transition_matrix():
    t = BigramTask(12, 64, n_successors=3)
    P = t.transition_matrix()
    assert torch.allclose(P.sum(1), torch.ones(12, dtype=torch.float64))
    b = t.batch(16, 0, 0)
    assert (P[b[:, :-1], b[:, 1:]] > 0).all()


def test_repeat_task_has_variable_length_and_offset_and_a_correct_mask():
    t = RepeatTask(200, 64, 4, 31)
    toks, mask = t.batch_with_mask(64, 0, 3)
    lens, starts = set(), set()
    for b in range(64):
        idx = mask[b].nonzero()[:, 0]
        assert len(idx) > 0 and (idx[1:] - idx[:-1] == 1).all()  # one contiguous block
        r = len(idx) + 1  # repeat length
        s = int(idx[0]) - r  # start of the first copy
        lens.add(r)
        starts.add(s)
        assert torch.equal(toks[b, s + 1: s + r], toks[b, s + r + 1: s + 2 * r])  # masked targets = first copy
        assert 4 <= r <= 31
    assert len(lens) > 10 and len(starts) > 10


def test_copy_task_copies_earlier_stretches_at_varying_distances():
    t = CopyTask(300, 64, 4, 16, copy_prob=0.7)
    toks, mask = t.batch_with_mask(32, 0, 1)
    assert 0.3 < mask.float().mean() < 0.8
    dists = set()
    for b in range(32):
        row = toks[b].tolist()
        for i in mask[b].nonzero()[:, 0].tolist():  # an earlier occurrence predicts the next token
            js = [j for j in range(1, i) if row[j] == row[i] and row[j + 1] == row[i + 1]]
            assert js, (b, i)
            dists.add(i - js[-1])
    assert len(dists) > 20  # no typical look-back distance to learn instead of induction


def test_skip_trigram_task_plants_its_rules():
    t = SkipTrigramTask(100, 48, n_rules=12, n_triggers=4, rules_per_seq=3)
    rules = t.rules
    assert len(rules) == 12 and len({r[0] for r in rules}) == 12 and len({r[:2] for r in rules}) == 12
    for trig in t.triggers:  # each trigger's sources map one-to-one onto the shared outputs
        assert sorted(c for _, b, c in rules if b == trig) == t.outputs
    trigger_of = {a: b for a, b, _ in rules}
    rule_of = {(a, b): c for a, b, c in rules}
    noise = set(t.noise)
    toks = t.batch(32, 0, 0)
    n_fired = 0
    for row in toks.tolist():
        sources = [(i, x) for i, x in enumerate(row) if x in trigger_of]
        assert sorted(trigger_of[a] for _, a in sources) == t.triggers  # one source per trigger
        triggers = [i for i, x in enumerate(row) if x in t.triggers]
        assert len(triggers) == 3
        fired = 0
        for i in triggers:  # C = the rule's output exactly when the trigger's source came earlier
            (pa, a), = [(p, a) for p, a in sources if trigger_of[a] == row[i]]
            if pa < i:
                assert row[i + 1] == rule_of[(a, row[i])]
                fired += 1
            else:
                assert row[i + 1] in noise
        assert sum(x in noise for x in row) == len(row) - 1 - 4 - 3 - fired
        n_fired += fired
    assert 0.3 < n_fired / (3 * 32) < 0.7  # about half the triggers find their source before them


# ------------------------------------------------------------------------------------- corpus
def _fake_stdlib(root: Path) -> Path:
    (root / "pkg" / "tests").mkdir(parents=True)
    (root / "test").mkdir()
    (root / "site-packages").mkdir()
    for i in range(60):
        (root / ("pkg" if i % 2 else ".") / f"mod{i}.py").write_text(
            f"import os\n\ndef f{i}(x):\n    return os.path.join(x, 'a{i}')\n\nclass C{i}:\n    pass\n" * 3)
    (root / "pkg" / "tests" / "test_x.py").write_text("assert False\n")
    (root / "test" / "t.py").write_text("assert False\n")
    (root / "site-packages" / "s.py").write_text("assert False\n")
    return root


def test_corpus_is_reproducible_and_skips_tests(tmp_path):
    root = _fake_stdlib(tmp_path / "lib")
    files = [p.relative_to(root).as_posix() for p in corpus.stdlib_files(root)]
    assert len(files) == 60 and not any("test" in f or "site-packages" in f for f in files)
    assert files == sorted(files)
    d1 = corpus.prepare_data_dir(tmp_path / "d1", vocab_size=300, root=root, verbose=False)
    d2 = corpus.prepare_data_dir(tmp_path / "d2", vocab_size=300, root=root, verbose=False)
    m1, m2 = corpus.load_manifest(d1), corpus.load_manifest(d2)
    assert m1["corpus_sha256"] == m2["corpus_sha256"] and m1["tokenizer_sha256"] == m2["tokenizer_sha256"]
    assert (d1 / "train.npy").read_bytes() == (d2 / "train.npy").read_bytes()
    assert m1["n_files"] == 60 and m1["vocab_size"] == 300 and m1["n_tokens"]["val"] > 0
    task = corpus.CorpusTask(300, 32, data_dir=str(d1))
    b = task.batch(4, 0, 0)
    assert b.shape == (4, 32) and (b[:, 0] == 0).all() and b.max() < 300
    from circwidgets.model import Tokenizer

    tok = Tokenizer.from_json(task.tokenizer_json())
    text = tok.decode(task.tokens()[:200].tolist())
    assert "import os" in text


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "train.npy").write_bytes((d / "train.npy").read_bytes()[:200]),
     "{d}/train.npy: cannot read the corpus's train tokens (Failed to read all data for array."),
    (lambda d: (d / "val.npy").unlink(), "{d}/val.npy: cannot read the corpus's val tokens ("),
    (lambda d: (d / "manifest.json").write_text("{x"), "{d}/manifest.json: not a readable corpus manifest ("),
    (lambda d: (d / "manifest.json").write_text("[]"), "{d}/manifest.json: not a corpus manifest (no vocab_size)"),
])
def test_cli_a_damaged_data_dir_is_a_usage_error_naming_the_file(tmp_path, monkeypatch, capsys, damage, message):
    """Used to end in a raw numpy ValueError / FileNotFoundError mid-run, or a JSON error naming no file."""
    from circwidgets.train.__main__ import main

    d = corpus.prepare_data_dir(tmp_path / "data", vocab_size=300, root=_fake_stdlib(tmp_path / "lib"), verbose=False)
    monkeypatch.setitem(recipes.RECIPES, "tiny-code", recipes.Recipe(
        "tiny-code", "test", dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_vocab=300, n_ctx=32,
                                  positional="shortformer", bos_token_id=0), "code",
        train=dict(steps=2, batch_size=4, eval_every=3, eval_batches=1, icl_n_seqs=2)))
    damage(d)
    with pytest.raises(SystemExit) as e:
        main(["tiny-code", "--data-dir", str(d), "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    assert f"python -m circwidgets.train: error: {message.format(d=d)}" in err, err
    assert not (tmp_path / "run").exists()


def test_cli_a_data_dir_that_is_a_file_is_a_usage_error(tmp_path, capsys):
    from circwidgets.train.__main__ import main

    f = tmp_path / "afile"
    f.write_text("keep me")
    with pytest.raises(SystemExit) as e:
        main(["toy-1l-code-stdlib", "--steps", "2", "--data-dir", str(f), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"--data-dir {f}: is a file, not a corpus directory" in err
    assert f.read_text() == "keep me"


def test_recipe_runs_end_to_end_and_the_tokenizer_ships_without_the_package(tmp_path, monkeypatch):
    root = _fake_stdlib(tmp_path / "lib")
    d = corpus.prepare_data_dir(tmp_path / "data", vocab_size=300, root=root, verbose=False)
    monkeypatch.setitem(recipes.RECIPES, "tiny-code", recipes.Recipe(
        "tiny-code", "test", dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_vocab=300, n_ctx=32,
                                  positional="shortformer", bos_token_id=0), "code",
        train=dict(steps=6, batch_size=4, eval_every=3, eval_batches=1, icl_n_seqs=2, n_snapshots=3)))
    # `tokenizers` unavailable at training time (a GPU box without it): the JSON still ships
    import builtins

    real_import = builtins.__import__

    def no_tokenizers(name, *a, **k):
        if name == "tokenizers" or name.startswith("tokenizers."):
            raise ImportError("no tokenizers here")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_tokenizers)
    tr = recipes.run("tiny-code", out=tmp_path / "run", data_dir=d, progress=False)
    monkeypatch.setattr(builtins, "__import__", real_import)
    assert tr.model.tokenizer is None and tr.step == 6
    m = cw.load(tmp_path / "run" / "model.safetensors")
    assert m.tokenizer is not None and m.to_str_tokens("import os")[0] == "<|endoftext|>"
    snaps = sorted((tmp_path / "run" / "snapshots").iterdir())
    assert [p.name for p in snaps] == ["step_000000.safetensors", "step_000006.safetensors"]
    assert json.loads(m.metadata["data"])["corpus_sha256"] == corpus.load_manifest(d)["corpus_sha256"]


def test_cli_runs_a_recipe(tmp_path):
    from circwidgets.train.__main__ import main

    assert main(["toy-1l-trigrams", "--steps", "2", "--out", str(tmp_path), "--no-progress"]) == 0
    m = cw.load(tmp_path / "model.safetensors")
    assert m.metadata["recipe"] == "toy-1l-trigrams" and json.loads(m.metadata["planted_rules"])
    with pytest.raises(SystemExit):
        main(["no-such-recipe"])


@pytest.mark.parametrize("args, message", [
    (["--set", "nothing=1"], "--set nothing: use model.X"),
    (["--set", "train.no_such=1"], "train has no field 'no_such'"),
    (["--set", "split=by-size"], "the code corpus's splits are package, file-hash"),
    (["--set", "train.schedule=wsd", "--set", "train.decay_steps=50"], "decay_steps=50 must be in 1..steps"),
    # each of these used to start and crash with a raw traceback (or train silently with a bad setting)
    (["--steps", "0"], "steps=0 must be an integer >= 1"),
    (["--steps", "-5"], "steps=-5 must be an integer >= 1"),
    (["--batch-size", "0"], "batch_size=0 must be an integer >= 1"),
    (["--set", "train.batch_size=-1"], "batch_size=-1 must be an integer >= 1"),
    (["--set", "train.steps=\"abc\"", "--steps", "0"], "steps=0 must be an integer >= 1"),
    (["--lr", "inf"], "lr=inf must be a finite number >= 0"),
    (["--set", "train.eval_every=0"], "eval_every=0 must be an integer >= 1"),
    (["--set", "train.checkpoint_every=0"], "checkpoint_every=0 must be an integer >= 1"),
    (["--set", "train.eval_batches=0"], "eval_batches=0 must be an integer >= 1"),
    (["--snapshots", "-1"], "n_snapshots=-1 must be an integer >= 0"),
    (["--set", "train.snapshot_dtype=bogus"],
     "snapshot_dtype='bogus' is not one of ('float32', 'float16', 'bfloat16', 'float64')"),
    (["--set", "train.betas=5"], "betas=5 must be two numbers in [0, 1)"),
    (["--set", "task.bogus=1"], "--set task.bogus: toy-1l-trigrams's task (skip_trigrams) has no option 'bogus'; "
                                "its options: n_rules, n_triggers, rules_per_seq, rule_seed"),
    (["--set", "init_std=abc"], "--set init_std='abc': must be a finite number > 0 (or null)"),
    (["--set", "model_seed=1.5"], "--set model_seed=1.5: must be an integer >= 0"),
    (["--threads", "-1"], "--threads -1: must be an integer >= 1"),
    (["--time-limit", "nan"], "--time-limit nan: must be a finite number of seconds > 0"),
    # repeat lengths of the in-context evaluation: were a traceback at the first evaluation
    (["--set", "train.icl_seq_lens=[1]"], "icl_seq_lens=(1,) must be a non-empty list of integers >= 2"),
    (["--set", 'train.icl_seq_lens=["a"]'], "icl_seq_lens=('a',) must be a non-empty list of integers >= 2"),
    (["--set", "train.icl_seq_len=1"], "icl_seq_len=1 must be an integer >= 2"),
    (["--set", "train.icl_seq_lens=[10, 200]"], "repeat length 200 does not fit this model"),
])
def test_cli_reports_a_bad_option_before_training(tmp_path, capsys, args, message):
    """A bad option fails before the first step as a usage error (exit 2, the message on stderr, no
    traceback) and writes nothing into the run directory."""
    from circwidgets.train.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(["toy-1l-trigrams", "--steps", "2", "--out", str(tmp_path / "run"), "--no-progress", *args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


def test_cli_out_that_is_a_file_is_a_usage_error(tmp_path, capsys):
    from circwidgets.train.__main__ import main

    f = tmp_path / "afile"
    f.write_text("keep me")
    with pytest.raises(SystemExit) as e:
        main(["toy-1l-trigrams", "--steps", "2", "--out", str(f), "--no-progress"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"--out {f}: is a file, not a directory" in err and "Traceback" not in err
    assert f.read_text() == "keep me"


def test_cli_a_diverging_run_stops_with_a_message_and_writes_no_nan_file(tmp_path, capsys):
    from circwidgets.train.__main__ import main

    out = tmp_path / "run"
    rc = main(["toy-1l-trigrams", "--steps", "10", "--lr", "1e30", "--set", "train.warmup=1", "--set",
               "train.checkpoint_every=5", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert ("python -m circwidgets.train: error: training diverged: the training loss became NaN or inf by step 5; "
            "stopped without saving this state; no checkpoint was written") in err
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]


def test_cli_steps_below_the_checkpoint_step_is_a_usage_error(tmp_path, capsys):
    """`--steps 2` on a run already at step 3 used to 'finish' at step 3 and rewrite model.safetensors."""
    from circwidgets.train.__main__ import main

    out = tmp_path / "run"
    assert main(["toy-1l-trigrams", "--steps", "3", "--out", str(out), "--no-progress"]) == 0
    before = (out / "model.safetensors").read_bytes(), (out / "checkpoint.safetensors").read_bytes()
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["toy-1l-trigrams", "--steps", "2", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    assert (f"--steps 2: the checkpoint in {out} is already at step 3; pass --steps >= 3 to continue it "
            "(or --fresh to start over)") in err
    assert ((out / "model.safetensors").read_bytes(), (out / "checkpoint.safetensors").read_bytes()) == before


@pytest.mark.parametrize("change, why", [
    (lambda c: c.update(future_field=1), "unexpected keyword argument 'future_field'"),
    (lambda c: c.update(batch_size="x"), "batch_size='x' must be an integer >= 1"),
])
def test_a_checkpoint_with_a_foreign_train_config_is_named(tmp_path, change, why):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from circwidgets.model.io import ModelFileError

    tr = _trainer(tmp_path, steps=2)
    tr.train()
    ck = tmp_path / "checkpoint.safetensors"
    with safe_open(str(ck), "pt") as f:
        meta = f.metadata()
    state = json.loads(meta["trainer"])
    change(state["train_config"])
    save_file(load_file(str(ck)), str(ck), metadata={**meta, "trainer": json.dumps(state)})
    with pytest.raises(ModelFileError) as e:
        _trainer(tmp_path, steps=2).load_checkpoint()
    assert str(e.value).startswith(f"{ck}: checkpoint train_config is not a valid TrainConfig (")
    assert why in str(e.value) and "cannot resume from it" in str(e.value)


def test_cli_a_full_disk_stops_with_a_message_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    import errno

    from circwidgets.train import trainer as trainer_mod
    from circwidgets.train.__main__ import main

    out = tmp_path / "run"
    args = ["toy-1l-trigrams", "--steps", "4", "--set", "train.checkpoint_every=2", "--out", str(out), "--no-progress"]
    assert main([*args[:2], "2", *args[3:]]) == 0
    before = (out / "checkpoint.safetensors").read_bytes()

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(trainer_mod, "_atomic_save_safetensors", full)
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith(
        "python -m circwidgets.train: error: training stopped: [Errno 28] No space left on device; "
        f"the files already in {out} (the last checkpoint, snapshots) were left as they were")
    assert (out / "checkpoint.safetensors").read_bytes() == before


def test_a_list_valued_setting_is_kept_as_a_tuple():
    """`--set train.betas=[0.9,0.95]` gives JSON lists: stored as tuples, so a resume compares equal."""
    tc = TrainConfig(betas=[0.9, 0.95], icl_seq_lens=[5, 7])
    assert tc.betas == (0.9, 0.95) and tc.icl_seq_lens == (5, 7)
    assert tc == TrainConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(tc))))


def test_non_finite_weights_stop_training_and_keep_the_last_good_checkpoint(tmp_path):
    """Weights gone NaN (step 14 here) stop the run with `TrainingDivergedError` at the next check; no
    checkpoint or snapshot of the NaN state is written: the step-10 checkpoint stays and resumes."""
    from circwidgets.model.io import read_safetensors
    from circwidgets.train.trainer import TrainingDivergedError

    tr = _trainer(tmp_path, steps=40, eval_every=1000, checkpoint_every=10, n_snapshots=3, snapshot_span=20)
    assert tr.config.snapshot_steps() == [0, 20, 40]
    step = tr.optimizer.step

    def poisoned(*a, **k):
        out = step(*a, **k)
        if tr.step == 14:
            with torch.no_grad():
                tr.model.W_E.fill_(float("nan"))
        return out

    tr.optimizer.step = poisoned
    with pytest.raises(TrainingDivergedError, match=r"training diverged: the training loss became NaN or inf by "
                                                    r"step 20; stopped without saving this state; the last good "
                                                    r"checkpoint \(.*checkpoint.safetensors\) was left as it was"):
        tr.train()
    assert [p.name for p in (tmp_path / "snapshots").iterdir()] == ["step_000000.safetensors"]
    _, tensors = read_safetensors(tmp_path / "checkpoint.safetensors", float_only=False)
    assert all(bool(torch.isfinite(t).all()) for t in tensors.values() if t.is_floating_point())
    assert _trainer(tmp_path, steps=40, eval_every=1000, checkpoint_every=10, n_snapshots=3, snapshot_span=20
                    ).load_checkpoint().step == 10
    with pytest.raises(TrainingDivergedError, match="the weights"):  # never a NaN file, whoever asks
        tr.save_checkpoint(tmp_path / "other.safetensors")
    assert not (tmp_path / "other.safetensors").exists()


def test_rotary_recipe_architecture_trains(tmp_path, monkeypatch):
    """`toy-2l-rotary`'s architecture (rotary, RMSNorm, grouped-query) at tiny size: builds with its norm
    weights at 1 (the recipe's init_std is for the matrices), trains a few steps, and the engine reads
    the result (offset profile, composition at an offset)."""
    from circwidgets import engine

    spec = recipes.get("toy-2l-rotary")
    assert spec.model["positional"] == "rotary" and spec.model["normalization"] == "RMS"
    assert spec.model["n_kv_heads"] < spec.model["n_heads"] and spec.model["attn_only"]
    tiny = {**spec.model, "d_model": 16, "n_heads": 2, "n_kv_heads": 1, "d_head": 8, "d_vocab": 64, "n_ctx": 32}
    monkeypatch.setitem(recipes.RECIPES, "tiny-rotary", recipes.Recipe(
        "tiny-rotary", "test", tiny, "copy", task_kwargs=dict(min_len=4, max_len=8, copy_prob=0.7),
        train=dict(steps=4, batch_size=4, eval_every=2, eval_batches=1, icl_n_seqs=2, n_snapshots=2),
        init_std=spec.init_std))
    model, *_ = recipes.build("tiny-rotary")
    assert torch.equal(model.ln1_w, torch.ones_like(model.ln1_w)) and float(model.W_Q.detach().std()) < 0.2
    tr = recipes.run("tiny-rotary", out=tmp_path / "run", progress=False)
    assert tr.step == 4
    m = cw.load(tmp_path / "run" / "model.safetensors")
    assert m.cfg.n_kv_heads == 1 and engine.offset_profile(m, range(4)).shape == (2, 2, 4)
    assert engine.composition_scores(m, "k", offset=1).shape == (2, 2, 2, 2)
