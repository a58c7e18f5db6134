"""Eigenvalues: heads coloured by OV / QK eigenvalue positivity; click one to see its eigenvalues."""

from __future__ import annotations

from typing import Any

import torch
import traitlets

from ..engine import check_layer_head, circuits, k_composition_eigenvalues, k_composition_positivity
from ..model import Transformer
from ._data import as_model, encode_array
from .base import CircuitWidget, int_list, reacts_to, rotary_offset

CIRCUITS = {
    "ov": "full OV  W_E W_OV W_U",
    "qk": "full QK  W_E W_QK W_Eᵀ",
    "qk_pos": "positional QK  W_pos W_QK W_posᵀ",
}
ROTARY_QK = "full QK at Δ  W_E W_Q R_Δ W_Kᵀ W_Eᵀ"
MAX_PROFILE = 64  # offsets 0 .. MAX_PROFILE - 1 in the offset profile


class Eigenvalues(CircuitWidget):
    """Eigenvalue positivity of every head (grid) and the selected head's eigenvalues in the complex plane.

    Traits (synced): `positivity` ({circuit: float32 `[n_layers, n_heads]`} from
    `engine.circuits.eigen_positivity`), `circuits` ([[name, label], ...] shown),
    `eigs` ({circuit: float32 `[d_head, 2]` (re, im)} of the selected head, from
    `engine.circuits.eigenvalues`), `log_magnitude` (draw |λ| on a log10(1+|λ|) scale), `through`
    (`[layer, head]` of an earlier head h1, or `[]`): adds the circuit "qk_comp", the K-composition term
    of each later head's QK circuit through h1, `W_E W_Q W_Kᵀ (W_OV^{h1})ᵀ W_Eᵀ` (engine
    `induction.k_composition_qk`; what an induction head's keys match through a previous-token head;
    positivity NaN for heads not after h1; rotary models: h2's QK circuit at `offset`, as the grid's QK).

    Rotary models (`rotary` True): the QK circuit depends on the offset Δ = query − key position;
    `offset` (0 .. `max_offset`) is the Δ at which the grid's QK positivity and the QK eigenvalues are
    shown, and `profile` (float32 `[n_offsets]`, offsets 0 .. len − 1) is the selected head's
    `engine.offset_profile` (mean attention score per offset): only the selected head's is sent.
    Per-head q/k norms: the QK circuit is exact up to positive per-token factors (`qk_note`).
    """

    _front_end = "eigenvalues"
    export_inputs = ("log_magnitude", "layer", "head")
    # the rotary offset box / profile click, the composed-QK menu: answered by a kernel only (each recomputes
    # every head's positivity), so the offline export leaves them out and its page disables them
    page_inputs = ("offset", "through")
    page_schema = {"through": int_list(2, heads=True)}  # [] or [layer, head] of a head of the model

    circuits = traitlets.List([]).tag(sync=True)
    positivity = traitlets.Dict({}).tag(sync=True)
    eigs = traitlets.Dict({}).tag(sync=True)
    log_magnitude = traitlets.Bool(False).tag(sync=True)
    rotary = traitlets.Bool(False).tag(sync=True)
    offset = traitlets.Int(0).tag(sync=True)
    max_offset = traitlets.Int(0).tag(sync=True)
    profile = traitlets.Dict({}).tag(sync=True)
    qk_note = traitlets.Unicode("").tag(sync=True)
    through = traitlets.List([]).tag(sync=True)

    def __init__(self, model: Transformer, layer: int = 0, head: int = 0, log_magnitude: bool = False,
                 offset: int = 0, through: tuple[int, int] | None = None, defer: bool = False):
        """`defer`: prepare the view when the page first shows it (or at `complete()`), not here."""
        self._pos: dict[str, torch.Tensor] = {}
        self._profile: torch.Tensor | None = None
        cfg = model.cfg
        rotary = cfg.positional == "rotary"
        if not rotary and offset != 0:
            raise ValueError(f"offset={offset!r} is only for rotary models (this one: positional={cfg.positional!r})")
        self._init_through = through
        super().__init__(model, layer=layer, head=head, log_magnitude=log_magnitude, rotary=rotary,
                         offset=offset, max_offset=cfg.n_ctx - 1 if rotary else 0, defer_setup=defer)
        if self._broken and not self.deferred and through is not None:  # (as before: reported by the view)
            self.through = list(through)

    def _after_setup(self) -> None:
        if self._init_through is not None:
            self.through = list(self._init_through)

    def _qk_offset(self) -> dict[str, int]:
        return {"offset": self.offset} if self.rotary else {}

    def _setup(self) -> None:
        cfg = self.model.cfg
        if self.rotary:
            rotary_offset(self.model, self.offset, "the eigenvalue view")
            names = ["ov", "qk"]
            self._profile = circuits.offset_profile(self.model, range(min(cfg.n_ctx, MAX_PROFILE))).float().cpu()
        else:
            names = ["ov", "qk"] + (["qk_pos"] if cfg.positional != "none" else [])
        if cfg.qk_norm:
            self.qk_note = ("q/k norms: the QK circuit has their weights folded in; the model's scores are it times "
                            "positive per-token factors")
        self._pos = {c: circuits.eigen_positivity(self.model, circuit=c, full=True,
                                                  **(self._qk_offset() if c == "qk" else {})).float().cpu()
                     for c in names}
        self._send_circuits()

    def _send_circuits(self) -> None:
        labels = {c: ROTARY_QK if (c == "qk" and self.rotary) else CIRCUITS[c] for c in self._pos if c in CIRCUITS}
        if self.through:
            l1, h1 = self.through
            labels["qk_comp"] = (f"QK composed through L{l1}H{h1} at Δ  W_E W_Q R_Δ W_Kᵀ W_OV¹ᵀ W_Eᵀ" if self.rotary
                                 else f"QK composed through L{l1}H{h1}  W_E W_Q W_Kᵀ W_OV¹ᵀ W_Eᵀ")
        self.circuits = [[c, lab] for c, lab in labels.items()]
        self.positivity = {c: encode_array(v, "float32") for c, v in self._pos.items()}

    @reacts_to("through")
    def _on_through(self, change) -> None:
        self.apply_or_revert(change, self._apply_through, "QK composed through")

    def _apply_through(self) -> None:
        """The requested `through`, checked and stored normalised (a negative index from Python counts from the
        end); the engine's positivity of every later head's composed circuit (an overflow raises, so the
        request is refused with the engine's message and the view keeps what it showed)."""
        if self.through:
            if len(self.through) != 2:
                raise ValueError(f"through={self.through!r}: give [layer, head] of an earlier head, or []")
            l1, h1 = check_layer_head(self.model, *self.through)
            # (rotary: at the view's offset, as the grid's QK; the engine refuses a rotary circuit without one)
            pos = k_composition_positivity(self.model, (l1, h1), **self._qk_offset())
            self.set_quietly(through=[l1, h1])
            self._pos["qk_comp"] = pos
        else:
            self._pos.pop("qk_comp", None)
        self._send_circuits()
        self.invalidate()

    def _variant(self) -> tuple:
        return ((self.offset,) if self.rotary else ()) + tuple(self.through)

    @reacts_to("offset")
    def _on_offset(self, change) -> None:
        """A new offset (rotary models): QK positivity of every head and the selected head's QK eigenvalues."""
        if self._broken:
            return

        def apply() -> None:
            if not self.rotary:
                raise ValueError("this model has no rotary positions: its QK circuit does not depend on an offset")
            off = rotary_offset(self.model, change["new"], "the eigenvalue view")
            qk = circuits.eigen_positivity(self.model, circuit="qk", full=True, offset=off).float().cpu()
            comp = (k_composition_positivity(self.model, tuple(self.through), offset=off)
                    if "qk_comp" in self._pos else None)  # the composed QK circuit is taken at the offset too
            self._pos["qk"] = qk
            if comp is not None:
                self._pos["qk_comp"] = comp
            with self.hold_sync():
                self.positivity = {c: encode_array(v, "float32") for c, v in self._pos.items()}
                self._refresh()

        self.apply_or_revert(change, apply, what=f"offset {change['new']} not applied")

    def offset_profile(self, layer: int, head: int) -> torch.Tensor | None:
        """The engine's offset profile of one head (float32 `[n_offsets]`), None for non-rotary models."""
        return None if self._profile is None else self._profile[layer, head]

    def head_eigenvalues(self, layer: int, head: int) -> dict[str, torch.Tensor]:
        """The engine's eigenvalues of one head, `{circuit: complex [d_head]}` (QK at `offset` for rotary models;
        `qk_comp`: empty for a head not after `through`)."""
        out = {c: circuits.eigenvalues(self.model, layer, head, circuit=c, full=True,
                                       **(self._qk_offset() if c == "qk" else {})) for c in self._pos if c != "qk_comp"}
        if "qk_comp" in self._pos:
            out["qk_comp"] = (k_composition_eigenvalues(self.model, tuple(self.through), (layer, head),
                                                        **self._qk_offset())
                              if layer > self.through[0] else torch.zeros(0, dtype=torch.complex64))
        return out

    def export_actions(self) -> list[dict[str, Any]]:
        return super().export_actions() + [{"log_magnitude": not self.log_magnitude}]

    def _payload(self, layer: int, head: int) -> dict[str, Any]:
        eig = self.head_eigenvalues(layer, head)
        out: dict[str, Any] = {
            "eigs": {c: encode_array(torch.stack([v.real, v.imag], -1).float(), "float32") for c, v in eig.items()}}
        if self._profile is not None:
            out["profile"] = encode_array(self._profile[layer, head], "float32")
        return out

    def summary(self) -> str:
        p = ", ".join(f"{c} positivity {float(v[self.layer, self.head]):+.3f}" for c, v in self._pos.items())
        if self.rotary:
            prof = self._profile[self.layer, self.head]
            p += f" (QK at offset {self.offset}; offset profile peaks at Δ = {int(prof.argmax())})"
        return (f"Eigenvalues: layer {self.layer} head {self.head}: {p} "
                f"({self.n_layers} layers x {self.n_heads} heads; live view needs a running kernel)")

    def figure(self):
        from .. import plot

        eig = self.head_eigenvalues(self.layer, self.head)
        name = dict(self.circuits)
        pos = {name[c].split("  ")[0]: float(v[self.layer, self.head]) for c, v in self._pos.items()}
        eigs = {name[c].split("  ")[0]: v.detach().cpu().numpy() for c, v in eig.items()}
        where = f" (QK at Δ = {self.offset})" if self.rotary else ""
        return plot.eigenvalues(eigs, pos, title=f"L{self.layer}H{self.head} eigenvalues{where}",
                                log_magnitude=self.log_magnitude)


def eigenvalues(model, layer: int = 0, head: int = 0, log_magnitude: bool = False, tokenizer=None,
                offset: int = 0, through: tuple[int, int] | None = None) -> Eigenvalues:
    """Eigenvalues widget: heads coloured by OV and QK positivity; click a head for its eigenvalues
    (full OV, full QK, positional QK) in the complex plane with the unit circle marked. Rotary models:
    QK at the offset Δ = `offset` (a control in the view), and the selected head's offset profile.
    `through=(l1, h1)` (or the "QK composed through" menu) adds each later head's QK circuit composed through
    head h1's output on the key side (`engine.k_composition_qk`)."""
    return Eigenvalues(as_model(model, tokenizer), layer=layer, head=head, log_magnitude=log_magnitude,
                       offset=offset, through=through)
