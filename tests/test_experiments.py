"""The measurements in experiments/ that docs/training-data.md quotes: their building blocks checked against
brute force on small inputs (the scripts themselves run on the shipped models and a corpus)."""

import importlib.util
from pathlib import Path

import numpy as np
import torch

from circwidgets.engine.heads import induction_tokens, per_token_loss
from circwidgets.model.testing import random_model

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


copy_ceiling = _load("copy_ceiling")


def test_copy_guesses_follow_the_most_recent_earlier_match():
    w = [5, 1, 2, 5, 3, 1, 2, 5, 9]
    # k = 1: at 3 (5 seen at 0 -> 1), at 5 (1 seen at 1 -> 2), at 6 (2 seen at 2 -> 5), at 7 (5 last at 3 -> 3)
    assert copy_ceiling.copy_guesses(w, 1) == [-1, -1, -1, 1, -1, 2, 5, 3, -1]
    # k = 2: (1, 2) recurs at 5-6 (first at 1-2 -> 5), (2, 5) at 6-7 (first at 2-3 -> 3); the last never guesses
    assert copy_ceiling.copy_guesses(w, 2) == [-1, -1, -1, -1, -1, -1, 5, 3, -1]


def test_copy_guess_accuracy_counts_hits_over_windows():
    r = np.array([3, 4, 5, 6])
    tokens = np.concatenate([r, r, [7, 8, 7, 9, 1, 2, 1, 2]])  # two windows of 8
    n, acc = copy_ceiling.copy_guess_accuracy(tokens, 8, 1)
    # window 1: positions 4, 5, 6 guess 4, 5, 6, all right; window 2: position 2 guesses 8 (wrong: 9 follows),
    # position 6 guesses 2 (right)
    assert (n, acc) == (5, 0.8)


def test_boosted_losses_at_zero_are_the_model_loss_and_a_boost_helps_an_always_right_copy():
    model = random_model(seed=3, n_ctx=32, d_vocab=40)
    toks = induction_tokens(model, 12, 4, 0)  # BOS + r + r: the copy guess is always right in the second copy
    base = per_token_loss(model(toks).float(), toks).mean().item()
    b0, b4, b8 = copy_ceiling.boosted_losses(model, toks, [0.0, 4.0, 8.0], chunk=3)
    assert abs(b0 - base) < 1e-5
    rep = torch.arange(13, 24)  # predicting positions of the repeated copy (targets 14..24)
    r0, r8 = copy_ceiling.boosted_losses(model, toks, [0.0, 8.0], positions=rep)
    assert r8 < r0 - 5  # +8 nats on the right token: the loss falls by almost all of it
    assert b8 < b4 < b0  # over all positions the guesses are right wherever they exist


def test_boosting_a_wrong_guess_costs_what_brute_force_says():
    model = random_model(seed=4, n_ctx=32, d_vocab=40)
    toks = torch.tensor([[0, 5, 6, 5, 7, 5, 8, 5, 9]])  # at 3, 5, 7 the guess (6, 7, 8) is never what follows
    pos = torch.tensor([3, 5, 7])
    b0, b6 = copy_ceiling.boosted_losses(model, toks, [0.0, 6.0], positions=pos)
    with torch.no_grad():
        logits = model(toks)[0].double()
    brute = []
    for b in (0.0, 6.0):
        nll = 0.0
        for t, guess in zip([3, 5, 7], [6, 7, 8]):
            row = logits[t].clone()
            row[guess] += b
            nll -= float(torch.log_softmax(row, -1)[int(toks[0, t + 1])])
        brute.append(nll / 3)
    assert abs(b0 - brute[0]) < 1e-4 and abs(b6 - brute[1]) < 1e-4
    assert b6 > b0 + 1  # +6 nats on a wrong token takes most of the probability from the right one


def test_compare_runs_takes_the_evaluation_at_or_just_before_a_step():
    compare_runs = _load("compare_runs")
    rows = [{"step": s} for s in (0, 250, 500, 750)]
    assert compare_runs.at(rows, 500)["step"] == 500
    assert compare_runs.at(rows, 600)["step"] == 500  # within one evaluation interval
    assert compare_runs.at(rows, 1000)["step"] == 750
    assert compare_runs.at(rows, 1001) is None  # past the run's last evaluation by more than an interval
    assert compare_runs.at(rows[1:], 100) is None
    by = {"icl_repeated": 9.0, "icl_repeated_by_len": {"100": 9.04, "10": 7.52, "23": 8.0}}
    assert compare_runs.copy_cell(by) == "7.5, 9.0"  # shortest and longest r, by length not by string order
