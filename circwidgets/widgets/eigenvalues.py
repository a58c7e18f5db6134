"""Eigenvalues: heads coloured by OV / QK eigenvalue positivity; click one to see its eigenvalues."""

from __future__ import annotations

from typing import Any

import torch
import traitlets

from ..engine import circuits
from ..model import Transformer
from ._data import as_model, encode_array
from .base import CircuitWidget

CIRCUITS = {
    "ov": "full OV  W_E W_OV W_U",
    "qk": "full QK  W_E W_QK W_Eᵀ",
    "qk_pos": "positional QK  W_pos W_QK W_posᵀ",
}


class Eigenvalues(CircuitWidget):
    """Eigenvalue positivity of every head (grid) and the selected head's eigenvalues in the complex plane.

    Traits (synced): `positivity` ({circuit: float32 `[n_layers, n_heads]`} from
    `engine.circuits.eigen_positivity`), `circuits` ([[name, label], ...] shown),
    `eigs` ({circuit: float32 `[d_head, 2]` (re, im)} of the selected head, from
    `engine.circuits.eigenvalues`), `log_magnitude` (draw |λ| on a log10(1+|λ|) scale).
    """

    _front_end = "eigenvalues"
    export_inputs = ("log_magnitude", "layer", "head")

    circuits = traitlets.List([]).tag(sync=True)
    positivity = traitlets.Dict({}).tag(sync=True)
    eigs = traitlets.Dict({}).tag(sync=True)
    log_magnitude = traitlets.Bool(False).tag(sync=True)

    def __init__(self, model: Transformer, layer: int = 0, head: int = 0, log_magnitude: bool = False):
        self._pos: dict[str, torch.Tensor] = {}
        super().__init__(model, layer=layer, head=head, log_magnitude=log_magnitude)

    def _setup(self) -> None:
        names = ["ov", "qk"] + (["qk_pos"] if self.model.cfg.positional != "none" else [])
        self._pos = {c: circuits.eigen_positivity(self.model, circuit=c, full=True).float().cpu() for c in names}
        self.circuits = [[c, CIRCUITS[c]] for c in names]
        self.positivity = {c: encode_array(v, "float32") for c, v in self._pos.items()}

    def head_eigenvalues(self, layer: int, head: int) -> dict[str, torch.Tensor]:
        """The engine's eigenvalues of one head, `{circuit: complex [d_head]}`."""
        return {c: circuits.eigenvalues(self.model, layer, head, circuit=c, full=True) for c in self._pos}

    def export_actions(self) -> list[dict[str, Any]]:
        return super().export_actions() + [{"log_magnitude": not self.log_magnitude}]

    def _payload(self, layer: int, head: int) -> dict[str, Any]:
        eig = self.head_eigenvalues(layer, head)
        return {"eigs": {c: encode_array(torch.stack([v.real, v.imag], -1).float(), "float32") for c, v in eig.items()}}

    def summary(self) -> str:
        p = ", ".join(f"{c} positivity {float(v[self.layer, self.head]):+.3f}" for c, v in self._pos.items())
        return (f"Eigenvalues: layer {self.layer} head {self.head}: {p} "
                f"({self.n_layers} layers x {self.n_heads} heads; live view needs a running kernel)")

    def figure(self):
        from .. import plot

        eig = self.head_eigenvalues(self.layer, self.head)
        pos = {CIRCUITS[c].split("  ")[0]: float(v[self.layer, self.head]) for c, v in self._pos.items()}
        eigs = {CIRCUITS[c].split("  ")[0]: v.detach().cpu().numpy() for c, v in eig.items()}
        return plot.eigenvalues(eigs, pos, title=f"L{self.layer}H{self.head} eigenvalues",
                                log_magnitude=self.log_magnitude)


def eigenvalues(model, layer: int = 0, head: int = 0, log_magnitude: bool = False, tokenizer=None) -> Eigenvalues:
    """Eigenvalues widget: heads coloured by OV and QK positivity; click a head for its eigenvalues
    (full OV, full QK, positional QK) in the complex plane with the unit circle marked."""
    return Eigenvalues(as_model(model, tokenizer), layer=layer, head=head, log_magnitude=log_magnitude)
