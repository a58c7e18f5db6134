"""The shipped models: small attention-only transformers trained by `circwidgets.train`, loadable
offline with `cw.load(name)`.

    >>> import circwidgets as cw
    >>> cw.zoo.list()                      # names of the shipped models
    >>> cw.zoo.card("toy-2l-induction")    # data, recipe, steps, losses, notable heads, claims
    >>> model = cw.load("toy-2l-induction")

`python -m circwidgets.zoo --check [NAME]` recomputes every card's claims from the shipped files.
"""

from __future__ import annotations

import builtins
import json
from pathlib import Path

ZOO_DIR = Path(__file__).resolve().parent
MODELS_DIR = ZOO_DIR / "models"
CARDS_DIR = ZOO_DIR / "cards"


def _goal(c: dict) -> str:
    """A claim's target and whether it is met, as the card states it ("measured fact" without one)."""
    if c.get("target") is None:
        return f"measured fact (checked to ±{c.get('tol', 0):g})"
    return f"{c['op']} {c['target']:g}: " + ("met" if c.get("target_met") else "**missed**")


class Card(dict):
    """A model card (a dict, as stored in `zoo/cards/NAME.json`) that prints as a readable summary."""

    def to_markdown(self) -> str:
        lines = [f"### {self['name']}", "", self.get("description", ""), ""]
        a = self.get("architecture", {})
        if a:
            lines.append(
                f"**Architecture**: {a.get('n_layers')} layers, d_model {a.get('d_model')}, {a.get('n_heads')} heads × "
                f"{a.get('d_head')}, vocab {a.get('d_vocab')}, n_ctx {a.get('n_ctx')}, attention-only, "
                f"normalisation: {a.get('normalization') or 'none'}"
                f"{' (final, before the unembedding, only)' if a.get('pre_norm') is False else ''}, "
                f"positions: {a.get('positional')}"
            )
        d = self.get("data", {})
        if d:
            lines.append(f"**Data**: {d.get('summary', '')}")
        t = self.get("training", {})
        if t:
            lines.append(
                f"**Training**: `{t.get('command', '')}` — {t.get('steps')} steps, {t.get('tokens'):,} tokens, "
                f"{t.get('wall_seconds', 0):.0f} s on {t.get('device', '?')}"
            )
        fl = self.get("final", {})
        if fl:
            lines.append("**Final**: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                   for k, v in fl.items()))
        heads = self.get("notable_heads", [])
        if heads:
            lines += ["", "**Notable heads**", ""]
            lines += [f"- {h['head']}: {h['role']}" for h in heads]
        if self.get("notes"):
            lines += ["", f"**Notes**: {self['notes']}"]
        cl = self.get("claims", [])
        if cl:
            lines += ["", "| claim | measured | target |", "| --- | --- | --- |"]
            lines += [f"| {c['text']} | {c['measured']:.4g} | {_goal(c)} |" for c in cl]
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def __str__(self) -> str:
        return self.to_markdown()


def list() -> builtins.list[str]:  # noqa: A001 - the public name the docs promise
    """Names of the shipped models (those with both a card and a weights file)."""
    if not CARDS_DIR.is_dir():
        return []
    return sorted(p.stem for p in CARDS_DIR.glob("*.json") if (MODELS_DIR / f"{p.stem}.safetensors").is_file())


def card(name: str) -> Card:
    """The model card of shipped model `name`."""
    p = CARDS_DIR / f"{name}.json"
    if not p.is_file():
        raise KeyError(f"no shipped model {name!r}; available: {', '.join(list()) or '(none)'}")
    return Card(json.loads(p.read_text()))


def path(name: str) -> Path:
    """Path of shipped model `name`'s `.safetensors` file; KeyError naming the available models."""
    p = MODELS_DIR / f"{name}.safetensors"
    if not isinstance(name, str) or not p.is_file() or not (CARDS_DIR / f"{name}.json").is_file():
        raise KeyError(f"no shipped model {name!r}; available: {', '.join(list()) or '(none)'}")
    return p


def snapshots(name: str) -> builtins.list[tuple[int, Path]]:
    """`(step, path)` of the training snapshots shipped with model `name` (e.g. to show the
    induction-head phase change), oldest first; each loads with `cw.load(path)` and carries the
    metrics history up to its step in `model.metadata["metrics"]`."""
    path(name)  # KeyError for unknown names
    out = []
    for p in MODELS_DIR.glob(f"{name}.step*.safetensors"):
        out.append((int(p.name[len(name) + 5:].split(".")[0]), p))
    return sorted(out)


def training_run(name: str):
    """The shipped snapshots of model `name` as a `circwidgets.train.snapshots.TrainingRun`: the
    `snapshots(name)` plus the shipped model itself when it is later than the last one, with the
    metrics history from the shipped file's metadata (None when it has none)."""
    from ..model.io import read_metadata
    from ..train.snapshots import Snapshot, TrainingRun, _metrics_of

    snaps = [Snapshot(step, p) for step, p in snapshots(name)]
    meta = read_metadata(path(name))
    final = int(meta.get("step", -1))
    if not snaps or final > snaps[-1].step:
        snaps.append(Snapshot(max(final, 0), path(name)))
    return TrainingRun(name, snaps, _metrics_of(meta))


def stats_path(name: str) -> Path:
    """Path of the reference statistics a card's claims compare with (may not exist)."""
    return MODELS_DIR / f"{name}.stats.safetensors"


from .lecture import code_windows, example_tokens, lecture  # noqa: E402 - the notebooks' helpers, after `list`

__all__ = ["Card", "card", "code_windows", "example_tokens", "lecture", "list", "path", "snapshots", "stats_path",
           "training_run"]
