"""The two cells every lecture notebook shares, as functions: load a shipped model for reading
(`lecture`) and the example input on which induction shows (`example_tokens`).

    >>> model = cw.zoo.lecture("toy-2l-code")          # read-only, one CPU thread, prints its shape
    >>> tokens, labels = cw.zoo.example_tokens(model)  # a code snippet twice (or BOS + r + r)
"""

from __future__ import annotations

import torch

from ..model import Transformer

# Real code, so that the second copy of the snippet is predictable only by looking back at the first.
SNIPPET = """def read_config(path, encoding="utf-8"):
    with open(path, encoding=encoding) as handle:
        return parse_config(handle.read())
"""


def lecture(name: str, quiet: bool = False) -> Transformer:
    """Shipped model `name` (or a path), loaded for reading (`requires_grad_(False)`), with torch set to one
    thread (these models are small: one thread is as fast and leaves the rest of the machine alone).
    Prints its name, shape and the shipped models unless `quiet`."""
    from .. import load
    from . import list as shipped

    torch.set_num_threads(1)
    model = load(name).requires_grad_(False)
    c = model.cfg
    if not quiet:
        print(c.name, "|", c.n_layers, "layers x", c.n_heads, "heads, d_model", c.d_model, "| vocab", c.d_vocab,
              "| shipped:", shipped())
    return model


def example_tokens(model: Transformer, text: str = SNIPPET, seq_len: int = 24, seed: int = 1,
                   quiet: bool = False) -> tuple[torch.Tensor, list[str]]:
    """`(tokens [pos], labels)`: `text` twice for a model with a tokenizer (the second copy is predictable by
    induction), else `BOS + r + r` with r `seq_len` random token ids (`engine.repeated_tokens`, `seed`).
    labels: the token strings (ids as strings for a synthetic vocabulary). Prints the first tokens unless
    `quiet`."""
    from ..engine import repeated_tokens

    if model.tokenizer is not None:
        tokens = model.to_tokens(text + text)[0]
        labels, sep = model.to_str_tokens(tokens), ""
    else:
        tokens = repeated_tokens(model.cfg.d_vocab, seq_len=seq_len, bos=model.cfg.bos_token_id, seed=seed)[0]
        labels, sep = [str(t) for t in tokens.tolist()], " "  # ids of a synthetic vocabulary: keep them apart
    if not quiet:
        print(len(tokens), "tokens:", sep.join(labels[1:12]).replace("\n", "\\n"), "...")
    return tokens, labels


# Plain-code modules of the standard library, read from the running Python: a reference distribution that
# needs no download (for mean ablation: "the mean over ordinary code", stated, not one input).
REFERENCE_MODULES = ("textwrap", "shlex", "fnmatch", "string", "json.decoder", "json.encoder")


def code_windows(model: Transformer, n_windows: int = 16, length: int = 64, seed: int = 0) -> torch.Tensor:
    """`[n_windows, length]` token windows (BOS first) cut at random offsets (`seed`) from the source of
    `REFERENCE_MODULES`; for a model without a tokenizer, uniformly random token ids after BOS."""
    import importlib
    import inspect

    g = torch.Generator().manual_seed(seed)
    bos = model.cfg.bos_token_id if model.cfg.bos_token_id is not None else 0
    if model.tokenizer is None:
        body = torch.randint(0, model.cfg.d_vocab, (n_windows, length - 1), generator=g)
    else:
        text = "\n".join(inspect.getsource(importlib.import_module(m)) for m in REFERENCE_MODULES)
        ids = model.to_tokens(text, prepend_bos=False)[0]
        starts = torch.randint(0, len(ids) - length, (n_windows,), generator=g)
        body = torch.stack([ids[s:s + length - 1] for s in starts.tolist()])
    return torch.cat([torch.full((n_windows, 1), bos, dtype=torch.long), body], 1)


__all__ = ["REFERENCE_MODULES", "SNIPPET", "code_windows", "example_tokens", "lecture"]
