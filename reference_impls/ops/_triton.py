"""Triton availability, interpreter detection and ``impl`` dispatch shared by all ops.

Importing this module never imports triton. Kernels are declared with :func:`kernel`, which
returns a :class:`DualKernel`: on CUDA tensors it launches the compiled ``triton.jit`` kernel,
on CPU tensors the Triton interpreter (``InterpretedFunction``) — so ``impl="triton"`` works on
CPU tensors whether or not ``TRITON_INTERPRET=1`` was set before triton was imported.
``impl="auto"`` picks Triton on CUDA tensors, or on CPU tensors when ``TRITON_INTERPRET=1`` is set
and triton imports; otherwise the naive PyTorch path.

Argument checks that read tensor *values* (lengths, indices, offsets) need the values on the host: on a CUDA
tensor that is a device synchronisation, which stalls the launch queue and rules out CUDA-graph capture. Every op
therefore takes ``validate``: ``None`` (default) runs those checks only where they cost no synchronisation (CPU
tensors), ``True`` everywhere, ``False`` nowhere (see :func:`check_values`). Shape / dtype checks always run. The
kernels clamp or mask out-of-range values, so unchecked bad input never reads or writes outside its buffers; the
result for such input is unspecified.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from collections import Counter
from typing import Any, Callable

import torch

IMPLS = ("auto", "naive", "torch", "triton")

#: Number of launches per kernel name (tests use it to prove the Triton path really ran).
launch_counts: Counter = Counter()

#: Every kernel declared with :func:`kernel`, by name (benchmarks read the autotune choices from here).
declared_kernels: dict = {}


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """True when triton can be imported."""
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # pragma: no cover - broken installs
        return False
    return True


def interpreter_requested() -> bool:
    """True when the environment asks for the Triton CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_impl(impl: str, device: torch.device, *, optimized: str = "triton") -> str:
    """Map ``impl`` to the path to run: ``"naive"`` or ``optimized`` (``"triton"`` or ``"torch"``).

    ``"auto"`` -> ``optimized`` on CUDA, or on CPU with ``TRITON_INTERPRET=1`` and triton importable
    (a ``"torch"`` optimised path needs neither); else ``"naive"``. ``"triton"``/``"torch"`` both request
    the op's optimised path. Raises ValueError for unknown names, or RuntimeError when ``"triton"``
    is requested and triton is missing.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "naive":
        return "naive"
    if optimized == "torch":
        if impl == "auto" and device.type != "cuda" and not interpreter_requested():
            return "naive"
        return "torch"
    if impl == "auto":
        on_device = device.type == "cuda" or interpreter_requested()
        return "triton" if on_device and triton_available() else "naive"
    if not triton_available():
        raise RuntimeError(f"impl={impl!r} needs triton, which is not importable")
    return "triton"


def check_values(validate: bool | None, *tensors) -> bool:
    """Whether to run the argument checks that read tensor values (see the module docstring): ``validate`` when
    given, else True only when every tensor given lives on the CPU."""
    if validate is not None:
        return bool(validate)
    return all(t.device.type == "cpu" for t in tensors if isinstance(t, torch.Tensor))


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (read from the device once, then cached); 4 elsewhere (the
    interpreter), so CPU tests exercise several programs per row."""
    if device.type != "cuda":
        return 4
    return _sm_count(device.index if device.index is not None else torch.cuda.current_device())


def next_power_of_2(n: int) -> int:
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


@contextlib.contextmanager
def _nested_jit_interpreted():
    """Let interpreted kernels call triton's own ``@jit`` library functions (``tl.max``, ``tl.sum``, ...).

    Those are compiled ``JITFunction`` objects unless ``TRITON_INTERPRET=1`` was set before triton was
    imported; for the duration of an interpreted launch their ``__call__`` runs them through the
    interpreter, exactly as ``InterpretedFunction.__call__`` would.
    """
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    original = JITFunction.__call__
    interpreted: dict = {}

    def call(self, *args, **kwargs):
        fn = interpreted.get(self.fn)
        if fn is None:
            fn = interpreted[self.fn] = InterpretedFunction(self.fn)
        return fn(*args, **kwargs)

    JITFunction.__call__ = call
    try:
        yield
    finally:
        JITFunction.__call__ = original


class DualKernel:
    """A Triton kernel that can be launched compiled (CUDA) or interpreted (CPU tensors).

    ``configs`` (optional list of ``triton.Config``) and ``key`` enable ``triton.autotune`` on CUDA;
    the interpreter always uses the ``default_meta`` launch parameters given at launch.
    """

    def __init__(self, fn: Callable, *, configs_fn: Callable[[], list] | None = None, key: list[str] | None = None):
        self.fn = fn
        self.name = fn.__name__
        self._configs_fn = configs_fn
        self._key = key or []
        self._compiled = None
        self._tuned = None
        self._interpreted = None

    def _get(self, device: torch.device, autotune: bool):
        import triton

        if device.type == "cpu":
            if self._interpreted is None:
                from triton.runtime.interpreter import InterpretedFunction

                self._interpreted = InterpretedFunction(self.fn)
            return self._interpreted
        if self._compiled is None:
            self._compiled = triton.jit(self.fn)
        if autotune and self._configs_fn is not None:
            if self._tuned is None:
                self._tuned = triton.autotune(configs=self._configs_fn(), key=self._key)(self._compiled)
            return self._tuned
        return self._compiled

    def launch(self, grid, *args: Any, device: torch.device, meta: dict, autotune: bool = False, **kwargs: Any):
        """Launch on ``grid`` with the constexprs ``meta``. With ``autotune`` on CUDA the tuned parameters come
        from the chosen config, so ``meta`` must not name them (nor ``num_warps`` / ``num_stages``)."""
        use_tune = autotune and device.type == "cuda" and self._configs_fn is not None
        fn = self._get(device, use_tune)
        launch_counts[self.name] += 1
        if device.type == "cpu":
            with _nested_jit_interpreted():
                return fn[grid](*args, **kwargs, **meta)
        return fn[grid](*args, **kwargs, **meta)


def kernel(configs_fn: Callable[[], list] | None = None, key: list[str] | None = None):
    """Decorator: declare a Triton kernel body (plain function using ``tl``) as a :class:`DualKernel`."""

    def wrap(fn: Callable) -> DualKernel:
        declared = DualKernel(fn, configs_fn=configs_fn, key=key)
        declared_kernels[declared.name] = declared
        return declared

    return wrap


def autotune_choices() -> dict:
    """``{kernel: {tuning key: chosen config}}`` for every autotuned kernel that has run in this process."""
    choices = {}
    for name, declared in declared_kernels.items():
        tuned = declared._tuned
        if tuned is not None and getattr(tuned, "cache", None):
            choices[name] = {str(k): str(cfg) for k, cfg in tuned.cache.items()}
    return choices
