"""The JS unit tests (js/test/) decode arrays encoded by the real Python encoder
(`circwidgets.widgets._data.encode_array`): this file writes that fixture and checks that the
committed copy is current. Regenerate after changing the encoder:

    python tests/test_js_fixtures.py --write
"""

from __future__ import annotations

import base64
import json
import math
import sys
from pathlib import Path

import numpy as np

from circwidgets.widgets._data import decode_array, encode_array

FIXTURE = Path(__file__).resolve().parents[1] / "js" / "test" / "fixtures" / "encoded_arrays.json"


def _num(x: float) -> float | str:
    """JSON has no NaN / Infinity: those go as strings the JS test turns back into numbers."""
    x = float(x)
    return x if math.isfinite(x) else str(x)  # "nan", "inf", "-inf"


def cases() -> list[dict]:
    rng = np.random.default_rng(0)
    pattern = np.tril(rng.random((6, 6)))
    pattern /= pattern.sum(-1, keepdims=True)
    special16 = np.array([0.0, -0.0, 1.0, -2.5, 65504.0, 6.1e-5, 5.96e-8, 3e-6, np.inf, -np.inf, np.nan, 0.1],
                         dtype=np.float32)
    arrays = [
        ("float16 specials (subnormal, max, inf, nan)", special16, "float16", "dense"),
        ("float16 random [3, 4]", rng.normal(size=(3, 4)).astype(np.float32), "float16", "dense"),
        ("float32 random [2, 3]", rng.normal(size=(2, 3)).astype(np.float32), "float32", "dense"),
        ("int32 ids", np.array([0, 1, -7, 50256, 2**31 - 1], dtype=np.int64), "int32", "dense"),
        ("uint8 quantised [2, 5] with nan", np.array([[0.5, -1.0, 3.0, np.nan, 0.0], [1, 2, 2.5, -0.25, 1e-3]]),
         "uint8", "dense"),
        ("uint8 constant", np.full(4, 0.7), "uint8", "dense"),
        ("float16 causal pattern, lower triangle", pattern.astype(np.float32), "float16", "tril"),
        ("float32 causal pattern, lower triangle", pattern.astype(np.float32), "float32", "tril"),
        ("float32 1 x 1 tril", np.array([[0.25]], dtype=np.float32), "float32", "tril"),
        ("float16 empty", np.zeros((0,), dtype=np.float32), "float16", "dense"),
    ]
    out = []
    for name, a, dtype, layout in arrays:
        p = encode_array(a, dtype, layout=layout)
        dec = decode_array(p)  # the Python inverse: what the page must get (full matrix for tril)
        out.append({
            "name": name, "dtype": p["dtype"], "shape": p["shape"], "layout": p["layout"],
            "lo": _num(p["lo"]), "hi": _num(p["hi"]),
            "data_b64": base64.b64encode(p["data"]).decode("ascii"),
            "expected": [_num(x) for x in np.asarray(dec, dtype=np.float64).reshape(-1)],
        })
    return out


def fixture_text() -> str:
    return json.dumps({"generated_by": "tests/test_js_fixtures.py", "cases": cases()}, indent=1,
                      sort_keys=True) + "\n"


def test_js_decoding_fixture_is_current():
    assert FIXTURE.exists(), f"missing {FIXTURE}: run `python tests/test_js_fixtures.py --write`"
    assert FIXTURE.read_text(encoding="utf-8") == fixture_text(), (
        "js/test/fixtures/encoded_arrays.json is stale: run `python tests/test_js_fixtures.py --write`")


def test_fixture_covers_every_dtype_and_layout():
    got = {(c["dtype"], c["layout"]) for c in cases()}
    assert got >= {("float16", "dense"), ("float32", "dense"), ("int32", "dense"), ("uint8", "dense"),
                   ("float16", "tril"), ("float32", "tril")}


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        FIXTURE.write_text(fixture_text(), encoding="utf-8")
        print(f"wrote {FIXTURE}")
    else:
        sys.exit(__doc__)
