"""The array operations that ranking and products need, on numpy or on torch (CPU or GPU): one code path for
both, chosen by :func:`resolve_backend`.
"""

from __future__ import annotations

import numpy as np

from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.explain.settings import BACKENDS


class NumpyOps:
    """The few array operations ranking and products need, on numpy. Rows are features, columns cases."""

    name = "numpy"
    device = "cpu"

    def asarray(self, a: np.ndarray) -> np.ndarray:
        # Values are only sorted and compared for ties, so float32 tables (deep features) stay float32:
        # the ranks are the same and sorting is twice as fast.
        a = np.asarray(a)
        return np.ascontiguousarray(a, dtype=a.dtype if a.dtype in (np.float32, np.float64) else np.float64)

    def index(self, idx: np.ndarray) -> np.ndarray:
        return np.asarray(idx, dtype=np.intp)

    def to_numpy(self, a) -> np.ndarray:
        return np.asarray(a)

    def sort_last(self, a):
        # Quicksort is not stable and needs not be: tied values share their average rank in any order.
        order = np.argsort(a, axis=-1)
        return np.take_along_axis(a, order, axis=-1), order

    def ones_bool(self, shape) -> np.ndarray:
        return np.ones(shape, dtype=bool)

    def where(self, cond, a, b):
        return np.where(cond, a, b)

    def flatnonzero(self, flags):
        return np.flatnonzero(flags)

    def diff_to(self, starts, end: int):
        """Lengths of the runs that begin at ``starts`` and end at the next start (the last at ``end``)."""
        stops = np.empty_like(starts)
        stops[:-1], stops[-1:] = starts[1:], end  # np.diff(append=) is ten times slower
        return stops - starts

    def repeat(self, values, counts):
        return np.repeat(values, counts)

    def float64(self, a):
        return a.astype(np.float64)

    def unsort_last(self, values, order):
        out = np.empty_like(values)
        np.put_along_axis(out, order, values, axis=-1)
        return out

    def sqrt(self, a):
        return np.sqrt(a)

    def stack_shuffled(self, z, perms):
        """Each row of ``z`` with its columns (cases) reordered by each permutation: (rows * b, n), in
        row-major order of (row, permutation), which needs no copy beyond the gather."""
        return np.take(z, perms, axis=1).reshape(-1, z.shape[-1])  # take, unlike z[:, perms], is C-ordered

    def abs_max_middle(self, a):
        """Largest absolute value over the first and last axes of a 3D array (no temporary |a|)."""
        return np.maximum(a.max(axis=(0, 2)), -a.min(axis=(0, 2)))

    def zeros(self, shape):
        return np.zeros(shape, dtype=np.float64)

    def single(self, a):
        return a.astype(np.float32)


class _TorchOps(NumpyOps):
    """The same operations on torch tensors (float64), on the GPU when one is given."""

    name = "torch"

    def __init__(self, device: str):
        import torch

        self.torch = torch
        self.device = device

    def asarray(self, a):
        # np.require copies read-only arrays (pandas may hand out views), which torch cannot wrap.
        return self.torch.from_numpy(np.require(a, np.float64, ["C", "W"])).to(self.device)

    def index(self, idx):
        return self.torch.as_tensor(np.asarray(idx, dtype=np.int64), device=self.device)

    def to_numpy(self, a) -> np.ndarray:
        return a.detach().cpu().numpy()

    def sort_last(self, a):
        values, order = self.torch.sort(a, dim=-1)
        return values, order

    def ones_bool(self, shape):
        return self.torch.ones(shape, dtype=self.torch.bool, device=self.device)

    def where(self, cond, a, b):
        return self.torch.where(cond, a, b)

    def flatnonzero(self, flags):
        return self.torch.nonzero(flags).reshape(-1)

    def diff_to(self, starts, end: int):
        return self.torch.diff(starts, append=self.torch.tensor([end], device=self.device))

    def repeat(self, values, counts):
        return self.torch.repeat_interleave(values, counts)

    def float64(self, a):
        return a.to(self.torch.float64)

    def unsort_last(self, values, order):
        return self.torch.empty_like(values).scatter_(-1, order, values)

    def sqrt(self, a):
        return self.torch.sqrt(a)

    def stack_shuffled(self, z, perms):
        return z[:, perms].reshape(-1, z.shape[-1])

    def abs_max_middle(self, a):
        return self.torch.maximum(a.amax(dim=(0, 2)), -a.amin(dim=(0, 2)))

    def zeros(self, shape):
        return self.torch.zeros(shape, dtype=self.torch.float64, device=self.device)

    def single(self, a):
        return a.to(self.torch.float32)


def resolve_backend(backend: str) -> NumpyOps:
    """Return the array backend: ``"numpy"``, ``"torch"`` (GPU if present, else CPU), ``"torch:cpu"``,
    ``"torch:cuda"``, or ``"auto"`` (torch on a GPU when one is present, numpy otherwise).

    Examples
    --------
    >>> resolve_backend("numpy").name
    'numpy'
    """
    text = str(backend).lower()
    if text == "numpy":
        return NumpyOps()
    if text not in BACKENDS and not text.startswith("torch:cuda:"):
        raise Rad4XCNNError(f"unknown backend {backend!r}: expected {', '.join(BACKENDS)}")
    try:
        import torch
    except ImportError:
        if text == "auto":
            return NumpyOps()
        raise Rad4XCNNError(f"backend {backend!r} needs torch, which is not installed") from None
    if text == "auto":
        return _TorchOps("cuda") if torch.cuda.is_available() else NumpyOps()
    if text == "torch":
        return _TorchOps("cuda" if torch.cuda.is_available() else "cpu")
    device = text.split(":", 1)[1]
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise Rad4XCNNError(f"backend {backend!r} asks for a GPU, but torch finds no CUDA device")
    return _TorchOps(device)
