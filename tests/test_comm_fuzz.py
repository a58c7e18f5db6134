"""Hostile messages from the page, through the real comm path (issue 14, item 6).

A real kernel (jupyter_client's KernelManager) opens one widget of every view; the test then acts as
the page: it sends `comm_msg` `{"method": "update", "state": {...}}` to each widget's comm, with
values drawn by hypothesis (wrong JSON types, huge numbers, strings, nulls, nested lists, keys the page
may not set). After every message: the kernel is alive, nothing on iopub is an error or a traceback,
a value of the wrong type is refused with the widget's `error` set, and the widget's state is still
well typed with its selection in range.
"""

from __future__ import annotations

import json
import os
import queue
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

jupyter_client = pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parent.parent

SETUP = r"""
import json, warnings
import torch
torch.set_num_threads(1)
import circwidgets as cw
from circwidgets.model.testing import random_model
from circwidgets.widgets.monitor import TrainingMonitor
_m = random_model(dtype=torch.float32, n_layers=2, d_model=16, n_heads=2, d_head=8, d_vocab=20, n_ctx=12)
_t = [1, 2, 3, 4, 1, 2, 3, 4]
W = {
    "attention": cw.attention(_m, _t), "eigenvalues": cw.eigenvalues(_m), "skip_trigrams": cw.skip_trigrams(_m),
    "composition": cw.composition(_m, _t), "ablation": cw.ablation(_m, _t, corrupted=[5, 2, 3, 4, 5, 2, 3, 4]),
    "paths": cw.paths(_m, _t), "monitor": TrainingMonitor(),
    "history": cw.training([(0, random_model(dtype=torch.float32, n_layers=2, d_model=16, n_heads=2, d_head=8,
                                             d_vocab=20, n_ctx=12, seed=3)), (10, _m)]),
}
_x = cw.explore(_m, _t, panels=("attention", "paths"))
W["explorer.paths"] = _x.panels["paths"]

def _probe(name, keys):
    w = W[name]
    out = {k: getattr(w, k) for k in keys + (["n_layers", "n_heads"] if name != "monitor" else ["status"])}
    out["selections"] = [list(v) for v in _x.selections().values()] if name == "explorer.paths" else []
    w.error = ""
    return json.dumps(out)
print(json.dumps({k: w.comm.comm_id for k, w in W.items()}))
"""

# the JSON kind of each page input (what a well-typed value looks like)
KINDS = {
    "attention": {"layer": "int", "head": "int", "value_weighted": "bool", "score_name": "str", "text": "str"},
    "eigenvalues": {"layer": "int", "head": "int", "log_magnitude": "bool"},
    "skip_trigrams": {"layer": "int", "head": "int", "query": "str", "n_rows": "int"},
    "composition": {"layer": "int", "head": "int", "kind": "str", "subtract_baseline": "bool", "pair": "int4"},
    "ablation": {"layer": "int", "head": "int", "ablation": "str", "mode": "str", "off": "pairs", "cuts": "lists",
                 "position": "int"},
    "paths": {"layer": "int", "head": "int", "position": "int", "target": "int", "path": "pairs", "query": "str"},
    "monitor": {"stop_requested": "bool"},
    "history": {"layer": "int", "head": "int", "step": "int", "circuit": "int4"},
}
KINDS["explorer.paths"] = KINDS["paths"]
KERNEL_ONLY = {"attention": ["scores", "labels", "n_layers"], "paths": ["terms", "total", "error"],
               "monitor": ["status", "steps", "error"], "ablation": ["loss", "effects"],
               "composition": ["details", "scores"], "eigenvalues": ["eigs", "positivity"],
               "skip_trigrams": ["rows", "d_vocab"], "explorer.paths": ["pattern"],
               "history": ["steps", "curves", "step_data"]}


def well_typed(kind: str, v) -> bool:
    is_int = isinstance(v, int) and not isinstance(v, bool)
    if kind == "int":
        return is_int
    if kind == "bool":
        return isinstance(v, bool)
    if kind == "str":
        return isinstance(v, str)
    if kind == "int4":
        return v == [] or (isinstance(v, list) and len(v) == 4 and all(isinstance(x, int) and not isinstance(x, bool)
                                                                       for x in v))
    if kind == "pairs":
        return isinstance(v, list) and all(isinstance(x, list) and len(x) == 2 and all(
            isinstance(y, int) and not isinstance(y, bool) for y in x) for x in v)
    if kind == "lists":
        return isinstance(v, list) and all(isinstance(x, list) for x in v)
    raise AssertionError(kind)


class Page:
    """A kernel client that plays the page: sends comm messages, runs probes, collects iopub."""

    def __init__(self):
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
        self.km = jupyter_client.KernelManager(kernel_name="python3")
        self.km.start_kernel(env=env)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)
        out, bad = self.execute(SETUP, timeout=300)
        assert not bad, bad
        self.comm_ids = json.loads(out.strip().splitlines()[-1])

    def _collect(self, msg_id: str, timeout: float) -> tuple[str, list[str]]:
        """stdout text, and every error / traceback / stderr-traceback message, until the kernel is
        idle again for `msg_id`."""
        stdout, bad = [], []
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no idle from the kernel within {timeout} s "
                                     f"(alive: {self.km.is_alive()})") from None
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            t, c = msg["msg_type"], msg["content"]
            if t == "error":
                bad.append(f"error: {c.get('ename')}: {c.get('evalue')}")
            elif t == "stream":
                if c["name"] == "stdout":
                    stdout.append(c["text"])
                if "Traceback" in c["text"] or "Exception in" in c["text"]:
                    bad.append(f"{c['name']}: {c['text'][:500]}")
            elif t in ("display_data", "execute_result") and "Traceback" in json.dumps(c.get("data", {})):
                bad.append(f"{t} with a traceback")
            elif t == "status" and c["execution_state"] == "idle":
                return "".join(stdout), bad

    def execute(self, code: str, timeout: float = 60) -> tuple[str, list[str]]:
        msg_id = self.kc.execute(code, silent=False, store_history=False)
        out, bad = self._collect(msg_id, timeout)
        reply = self.kc.get_shell_msg(timeout=timeout)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=timeout)
        if reply["content"]["status"] != "ok":
            bad.append(f"execute failed: {reply['content'].get('ename')}: {reply['content'].get('evalue')}")
        return out, bad

    def send(self, widget: str, data) -> list[str]:
        """Send `data` as a comm message to the widget; what iopub said wrong while handling it."""
        msg = self.kc.session.msg("comm_msg", {"comm_id": self.comm_ids[widget], "data": data})
        self.kc.shell_channel.send(msg)
        _, bad = self._collect(msg["header"]["msg_id"], timeout=60)
        return bad

    def probe(self, widget: str) -> dict:
        out, bad = self.execute(f"print(_probe({widget!r}, {[*KINDS[widget], 'error']!r}))")
        assert not bad, bad
        return json.loads(out.strip().splitlines()[-1])

    def close(self):
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def page():
    p = Page()
    yield p
    alive = p.km.is_alive()
    p.close()
    assert alive, "the kernel died during the hostile messages"


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 9), st.integers(-2**70, 2**70),
              st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=6),
              st.sampled_from(["k", "q", "v", "zero", "mean", "patch", "ablate", "induction", "ov_positivity",
                               "#3", "\ud800", "<img src=x onerror=alert(1)>"])),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=3), inner, max_size=2)),
    max_leaves=8)


def check_after(page: Page, widget: str, state: dict, bad: list[str]) -> None:
    assert not bad, f"{widget} {state!r}: {bad}"
    assert page.km.is_alive()
    got = page.probe(widget)
    kinds = KINDS[widget]
    wrong = [k for k, v in state.items() if k not in kinds or not well_typed(kinds[k], v)]
    if wrong:  # a value the page may not send: refused, and said so
        assert got["error"], f"{widget} {state!r}: no error for {wrong}"
        assert "not applied (from the page)" in got["error"] and wrong[0] in got["error"], got["error"]
    for k, kind in kinds.items():  # whatever came in, the widget's state stays well typed
        assert well_typed(kind, got[k]), f"{widget} {state!r}: {k} = {got[k]!r}"
    if widget != "monitor":
        assert 0 <= got["layer"] < got["n_layers"] and 0 <= got["head"] < got["n_heads"], got
    if got["selections"]:  # the explorer's panels follow the shared selection
        assert all(s == got["selections"][0] for s in got["selections"]), got["selections"]


@pytest.mark.parametrize("widget", list(KINDS))
def test_page_fuzz_through_the_comm(page, widget):
    """Random updates of the page inputs (and keys the page may not set) through the real comm."""
    keys = st.sampled_from(list(KINDS[widget]) + KERNEL_ONLY[widget] + ["bogus"])
    typed = {"int": st.integers(-3, 9), "bool": st.booleans(), "str": st.text(max_size=5),
             "int4": st.lists(st.integers(-1, 3), min_size=4, max_size=4),
             "pairs": st.lists(st.lists(st.integers(-1, 3), min_size=2, max_size=2), max_size=3),
             "lists": st.lists(st.lists(st.integers(-1, 3), max_size=5), max_size=2)}
    well = st.one_of(*(st.fixed_dictionaries({k: typed[kind]}) for k, kind in KINDS[widget].items()))
    hostile = st.dictionaries(keys, JSON_VALUES, min_size=1, max_size=3)

    @settings(max_examples=30, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(state=st.one_of(hostile, well))
    def run(state):
        bad = page.send(widget, {"method": "update", "state": state, "buffer_paths": []})
        check_after(page, widget, state, bad)

    run()


@pytest.mark.parametrize("state, needle", [
    ({"head": 1.5}, "head=1.5 must be an integer"), ({"head": "abc"}, "head='abc' must be an integer"),
    ({"head": None}, "head=None must be an integer"), ({"layer": True}, "layer=True must be an integer"),
    ({"value_weighted": "yes"}, "value_weighted='yes' must be true or false"),
    ({"value_weighted": 1}, "value_weighted=1 must be true or false"),
])
def test_issue_examples_attention(page, state, needle):
    """The issue's examples: refused with a message naming the trait; the selection stays."""
    before = page.probe("attention")
    bad = page.send("attention", {"method": "update", "state": state})
    assert not bad, bad
    got = page.probe("attention")
    assert needle in got["error"], got["error"]
    assert (got["layer"], got["head"], got["value_weighted"]) == (before["layer"], before["head"],
                                                                 before["value_weighted"])


@pytest.mark.parametrize("widget, state, needle", [
    ("composition", {"pair": None}, "pair=None must be a list"),
    ("composition", {"pair": [0, 0, 1]}, "pair=[0, 0, 1] must be [] or a list of 4 integers"),
    ("eigenvalues", {"log_magnitude": 5}, "log_magnitude=5 must be true or false"),
    ("paths", {"path": "junk"}, "path='junk' must be a list"),
    ("paths", {"path": [["a", 1]]}, "must be a list of [layer, head] integer pairs"),
    ("ablation", {"off": [[0]]}, "off=[[0]] must be a list of [layer, head] integer pairs"),
    ("paths", {"terms": []}, "terms=[] set by the kernel only"),
    ("monitor", {"status": "finished"}, "status='finished' set by the kernel only"),
    ("monitor", {"stop_requested": "yes"}, "stop_requested='yes' must be true or false"),
])
def test_issue_examples_other_views(page, widget, state, needle):
    bad = page.send(widget, {"method": "update", "state": state})
    assert not bad, bad
    assert needle in page.probe(widget)["error"]


@pytest.mark.parametrize("data, needle", [
    ({"state": {"head": 1}}, "had no method"), ("junk", "had no method"), ({"method": 5}, "had no method"),
    ({"method": "update", "state": 7}, "instead of an object"),
    ({"method": "update", "state": {"head": 1}, "buffer_paths": [["head", 0, "x"]]}, "buffer paths for 0 buffers"),
    ({"method": "update", "state": {"head": 1}, "buffer_paths": "junk"}, "buffer paths for 0 buffers"),
])
def test_malformed_messages_are_reported(page, data, needle):
    bad = page.send("paths", data)
    assert not bad, bad
    assert needle in page.probe("paths")["error"]


def test_good_messages_still_work(page):
    """The gate lets real clicks through: a head, a bar's path, a position."""
    assert not page.send("paths", {"method": "update", "state": {"layer": 1, "head": 1, "path": [[0, 1], [1, 1]]}})
    got = page.probe("paths")
    assert (got["layer"], got["head"], got["path"], got["error"]) == (1, 1, [[0, 1], [1, 1]], "")
    assert not page.send("attention", {"method": "update", "state": {"value_weighted": True}})
    got = page.probe("attention")
    assert got["value_weighted"] is True and got["error"] == ""
