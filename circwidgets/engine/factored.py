"""Products of matrices kept unmaterialised (in the spirit of TransformerLens' `FactoredMatrix`).

A `FactoredMatrix` stands for the product `M_1 @ M_2 @ ... @ M_n` of two or more factors.
Every factor is a tensor `[..., rows, cols]`; leading (batch) dimensions broadcast, so
`FactoredMatrix(W_E, W_V, W_O, W_U)` with `W_V [layer, head, d_model, d_head]` is the full OV
circuit of every head, shape `[layer, head, d_vocab, d_vocab]`, without ever holding a
`d_vocab x d_vocab` matrix.

The tricks (docs/ARCHITECTURE.md, Conventions):
- nonzero eigenvalues of `A B` equal those of `B A`: the product is rotated cyclically so that it
  starts at its smallest inner dimension, and only that small square matrix is formed;
- `||A B||_F^2 = tr((A^T A)(B B^T))` on the small Gram matrices;
- SVD through QR of the two factors and the SVD of the small core `R_A R_B^T`.
Products of several factors are evaluated in the cheapest order (matrix-chain dynamic program
that also counts the batch size of every partial product, so a factor shared by all heads, like
`W_U W_E`, is multiplied once and not once per head).

Eigenvalues are computed in float64 on the CPU (returned as complex64, or complex128 for float64
factors, on the factors' device); SVD, norms and traces in float32 when the factors are float16/bfloat16
(and in the factors' own dtype otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cached_property

import torch

__all__ = ["FactoredMatrix", "chain_matmul", "compute_dtype", "eigvals"]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype used for eigen/SVD/norm maths: float32 for half precisions, else `dtype` itself."""
    if dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    return dtype


def _batch_numel(shapes: Sequence[torch.Size]) -> int:
    return math.prod(torch.broadcast_shapes(*shapes)) if shapes else 1


def chain_matmul(factors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Product of `factors` (broadcasting leading dims) in the order with the fewest multiply-adds."""
    n = len(factors)
    if n == 1:
        return factors[0]
    dims = [factors[0].shape[-2]] + [f.shape[-1] for f in factors]
    bshapes = [f.shape[:-2] for f in factors]
    bn = [[_batch_numel(bshapes[i:j + 1]) for j in range(n)] for i in range(n)]
    cost = [[0.0] * n for _ in range(n)]
    split = [[0] * n for _ in range(n)]
    for length in range(2, n + 1):
        for i in range(n - length + 1):
            j = i + length - 1
            best, arg = math.inf, i
            for k in range(i, j):
                c = cost[i][k] + cost[k + 1][j] + bn[i][j] * dims[i] * dims[k + 1] * dims[j + 1]
                if c < best:
                    best, arg = c, k
            cost[i][j], split[i][j] = best, arg

    def mul(i: int, j: int) -> torch.Tensor:
        if i == j:
            return factors[i]
        k = split[i][j]
        return torch.matmul(mul(i, k), mul(k + 1, j))

    return mul(0, n - 1)


def eigvals(M: torch.Tensor) -> torch.Tensor:
    """`torch.linalg.eigvals` of small square matrices `[..., k, k]`, computed in float64 on the CPU
    and returned on `M`'s device, complex64 for float32/half input, complex128 for float64.

    Measured on a batch of 144 64x64 matrices, 2-core CPU shared with other jobs: float32 5.2 s,
    float64 0.39 s with 2 threads (0.20 s / 0.28 s single-threaded: float32 geev suffers badly from
    thread contention, float64 does not). On an H200 the warm OV+QK positivity of those 144 heads
    took 1.19 s with CUDA's eig and 0.24 s with this round trip to the CPU (the copy costs nothing).
    A matrix with a NaN / inf entry (an overflow upstream) gets NaN eigenvalues, without calling LAPACK
    on it (which rejects it, printing an error); callers report it (`_check.check_finite_output`).
    """
    out = torch.complex64 if M.dtype in (torch.float32, torch.float16, torch.bfloat16) else torch.complex128
    A = M.detach().to("cpu", torch.float64)
    bad = ~torch.isfinite(A).flatten(-2).all(-1)
    if bool(bad.any()):
        lam = torch.linalg.eigvals(torch.where(bad[..., None, None], 0.0, A))
        lam[bad] = complex("nan+nanj")
    else:
        lam = torch.linalg.eigvals(A)
    return lam.to(device=M.device, dtype=out)


class FactoredMatrix:
    """The product `factors[0] @ factors[1] @ ... @ factors[-1]`, never formed unless asked.

    Shape `[*batch, ldim, rdim]` where `batch` is the broadcast of the factors' leading dims.
    `FactoredMatrix(A, B)` is the two-factor case of TransformerLens; more factors are allowed and
    nested `FactoredMatrix` arguments are flattened. Index the batch dims with `fm[layer, head]`.
    """

    def __init__(self, *factors: torch.Tensor | FactoredMatrix):
        if len(factors) == 1 and isinstance(factors[0], (list, tuple)):
            factors = tuple(factors[0])
        flat: list[torch.Tensor] = []
        for f in factors:
            if isinstance(f, FactoredMatrix):
                flat.extend(f.factors)
            elif isinstance(f, torch.Tensor):
                if f.ndim < 2:
                    raise ValueError(f"FactoredMatrix factors must be matrices (ndim >= 2), got shape {tuple(f.shape)}")
                flat.append(f)
            else:
                raise TypeError(f"FactoredMatrix factors must be tensors, got {type(f).__name__}")
        if len(flat) < 2:
            raise ValueError("FactoredMatrix needs at least two factors")
        for i in range(len(flat) - 1):
            if flat[i].shape[-1] != flat[i + 1].shape[-2]:
                raise ValueError(
                    f"FactoredMatrix factor {i} has shape {tuple(flat[i].shape)} and factor {i + 1} has shape "
                    f"{tuple(flat[i + 1].shape)}: inner dimensions {flat[i].shape[-1]} != {flat[i + 1].shape[-2]}"
                )
        devices = {f.device for f in flat}
        if len(devices) > 1:
            raise ValueError(f"FactoredMatrix factors are on different devices: {sorted(map(str, devices))}")
        dtype = flat[0].dtype
        for f in flat[1:]:
            dtype = torch.promote_types(dtype, f.dtype)
        self.factors: tuple[torch.Tensor, ...] = tuple(f.to(dtype) for f in flat)
        self.batch_shape = torch.broadcast_shapes(*(f.shape[:-2] for f in self.factors))

    # ------------------------------------------------------------------ shape
    @property
    def dims(self) -> list[int]:
        """`[ldim, inner_1, ..., inner_{n-1}, rdim]`."""
        return [self.factors[0].shape[-2]] + [f.shape[-1] for f in self.factors]

    @property
    def ldim(self) -> int:
        return self.factors[0].shape[-2]

    @property
    def rdim(self) -> int:
        return self.factors[-1].shape[-1]

    @property
    def mdim(self) -> int:
        """The smallest inner dimension (an upper bound on the rank)."""
        return min(self.dims[1:-1])

    @property
    def shape(self) -> torch.Size:
        return torch.Size((*self.batch_shape, self.ldim, self.rdim))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> torch.dtype:
        return self.factors[0].dtype

    @property
    def device(self) -> torch.device:
        return self.factors[0].device

    def __repr__(self) -> str:
        inner = "x".join(str(d) for d in self.dims[1:-1])
        return f"FactoredMatrix(shape={tuple(self.shape)}, inner={inner}, dtype={self.dtype})"

    def to(self, *args, **kwargs) -> FactoredMatrix:
        return FactoredMatrix(*(f.to(*args, **kwargs) for f in self.factors))

    def detach(self) -> FactoredMatrix:
        return FactoredMatrix(*(f.detach() for f in self.factors))

    # ------------------------------------------------------------------ algebra
    @property
    def T(self) -> FactoredMatrix:
        """Transpose of the matrix dims (batch dims unchanged)."""
        return FactoredMatrix(*(f.mT for f in reversed(self.factors)))

    mT = T

    def __matmul__(self, other: torch.Tensor | FactoredMatrix) -> FactoredMatrix:
        if isinstance(other, FactoredMatrix):
            return FactoredMatrix(*self.factors, *other.factors)
        if isinstance(other, torch.Tensor):
            if other.ndim == 1:
                return chain_matmul([*self.factors, other[:, None]])[..., 0]
            return FactoredMatrix(*self.factors, other)
        return NotImplemented

    def __rmatmul__(self, other: torch.Tensor) -> FactoredMatrix:
        if isinstance(other, torch.Tensor):
            if other.ndim == 1:
                return chain_matmul([other[None, :], *self.factors])[..., 0, :]
            return FactoredMatrix(other, *self.factors)
        return NotImplemented

    def __getitem__(self, idx) -> FactoredMatrix:
        """Index the batch dims only: `fm[layer]`, `fm[layer, head]`, `fm[:, 3]`."""
        if not isinstance(idx, tuple):
            idx = (idx,)
        if any(i is Ellipsis or i is None for i in idx):
            raise IndexError("FactoredMatrix indexing takes batch indices only (no ... or None)")
        if len(idx) > len(self.batch_shape):
            raise IndexError(
                f"FactoredMatrix with batch shape {tuple(self.batch_shape)} got {len(idx)} indices; "
                "index the matrix itself with .rows()/.cols()"
            )
        out = []
        for f in self.factors:
            if f.ndim == 2:  # shared by the whole batch
                out.append(f)
            else:
                out.append(f.expand(*self.batch_shape, *f.shape[-2:])[idx])
        return FactoredMatrix(*out)

    # ------------------------------------------------------------------ dense pieces
    def _split(self) -> int:
        """Index of the factor that starts the right part, cutting at the smallest inner dim."""
        inner = self.dims[1:-1]
        return 1 + min(range(len(inner)), key=inner.__getitem__)

    @cached_property
    def A(self) -> torch.Tensor:
        """Left factor `[*batch, ldim, mdim]` of a two-factor form `A @ B` (materialised, cached)."""
        return chain_matmul(self.factors[: self._split()])

    @cached_property
    def B(self) -> torch.Tensor:
        """Right factor `[*batch, mdim, rdim]` of a two-factor form `A @ B` (materialised, cached)."""
        return chain_matmul(self.factors[self._split():])

    def materialize(self) -> torch.Tensor:
        """The dense product `[*batch, ldim, rdim]` (for tests and small matrices)."""
        return chain_matmul(self.factors)

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Dense rows `start:stop` of the product, `[*batch, stop - start, rdim]`."""
        if not (0 <= start <= stop <= self.ldim):
            raise IndexError(f"rows({start}, {stop}) out of range: rows are 0..{self.ldim}")
        return chain_matmul([self.factors[0][..., start:stop, :], *self.factors[1:]])

    def cols(self, start: int, stop: int) -> torch.Tensor:
        """Dense columns `start:stop` of the product, `[*batch, ldim, stop - start]`."""
        if not (0 <= start <= stop <= self.rdim):
            raise IndexError(f"cols({start}, {stop}) out of range: columns are 0..{self.rdim}")
        return chain_matmul([*self.factors[:-1], self.factors[-1][..., start:stop]])

    def _upcast(self) -> list[torch.Tensor]:
        dt = compute_dtype(self.dtype)
        return [f.to(dt) for f in self.factors]

    def _rotated_core(self) -> torch.Tensor:
        """Square `[*batch, k, k]` matrix with the same nonzero eigenvalues and trace, k = smallest dim."""
        if self.ldim != self.rdim:
            raise ValueError(f"eigenvalues/trace need a square matrix, this one is {self.ldim} x {self.rdim}")
        fs = self._upcast()
        dims = self.dims[:-1]  # dims[i] is the dimension entering factor i (dims[0] = the outer one)
        i = min(range(len(dims)), key=dims.__getitem__)
        return chain_matmul(fs[i:] + fs[:i])

    # ------------------------------------------------------------------ spectra and norms
    def eigenvalues(self) -> torch.Tensor:
        """Eigenvalues of the small cyclic rotation of the product, complex `[*batch, k]`.

        `k = min(ldim, inner dims)`; these are the eigenvalues of the full matrix other than
        (`ldim - k` of) its zero eigenvalues. Unsorted, as `torch.linalg.eigvals` returns them.
        """
        return eigvals(self._rotated_core())

    def trace(self) -> torch.Tensor:
        """`tr(M)` `[*batch]`, from the small rotation (trace is cyclic)."""
        return self._rotated_core().diagonal(dim1=-2, dim2=-1).sum(-1)

    def _grams(self) -> tuple[torch.Tensor, torch.Tensor]:
        fs = self._upcast()
        s = self._split()
        left, right = fs[:s], fs[s:]
        gl = chain_matmul([f.mT for f in reversed(left)] + left)  # A^T A  [*, k, k]
        gr = chain_matmul(right + [f.mT for f in reversed(right)])  # B B^T  [*, k, k]
        return gl, gr

    def norm(self) -> torch.Tensor:
        """Frobenius norm `[*batch]` via `sqrt(tr((A^T A)(B B^T)))` (both Gram matrices are symmetric)."""
        gl, gr = self._grams()
        return (gl * gr).sum((-2, -1)).clamp_min(0).sqrt()

    def svd(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Thin SVD `U [*, ldim, r]`, `S [*, r]` (descending), `Vh [*, r, rdim]` with `M = U diag(S) Vh`.

        Through reduced QR of `A` and `B^T` and the SVD of the `r x r` core `R_A R_B^T`,
        `r = min(ldim, rdim, mdim)`; `A`, `B` are materialised (`ldim x mdim`, `mdim x rdim`),
        never `ldim x rdim`.
        """
        dt = compute_dtype(self.dtype)
        a, b = self.A.to(dt), self.B.to(dt)
        qa, ra = torch.linalg.qr(a)
        qb, rb = torch.linalg.qr(b.mT)
        uc, s, vhc = torch.linalg.svd(ra @ rb.mT, full_matrices=False)
        return qa @ uc, s, vhc @ qb.mT

    def singular_values(self) -> torch.Tensor:
        """Singular values `[*batch, r]`, descending, from the small core only (no U/V)."""
        dt = compute_dtype(self.dtype)
        ra = torch.linalg.qr(self.A.to(dt), mode="r")[1]
        rb = torch.linalg.qr(self.B.to(dt).mT, mode="r")[1]
        return torch.linalg.svdvals(ra @ rb.mT)
