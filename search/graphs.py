"""CUDA graphs for the search step: capture a fixed-shape computation once, then replay it.

A search step launches thousands of small kernels; replaying them as one CUDA graph removes the per-launch
CPU cost.  :class:`GraphedCall` wraps the part of a step that has static shapes and no host
synchronisation (forward, backward, marginal-contribution reruns): the first ``warmup`` calls run eagerly
on a side stream (as PyTorch's CUDA-graph notes require), the next one captures, every later one copies its
inputs into the captured buffers and replays.  The caller keeps the parts that synchronise (finite checks,
optimizer decisions) outside.  Rules for the wrapped function:

* tensors it reads must be its inputs or live at fixed addresses (parameters, buffers, optimizer state);
* it must not synchronise with the host (``.item()``, ``bool(tensor)``) or draw random numbers;
* it returns tensors (any nesting of lists / tuples / dataclasses of tensors); after a replay they hold
  the new values, so a caller consumes them before the next call;
* parameter gradients it leaves in ``.grad`` stay graph-owned: nobody may reset them to ``None`` after
  the capture (the replay refills them).
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence

import torch

__all__ = ['GraphedCall']


class GraphedCall:
    """``fn(*inputs)`` run eagerly ``warmup`` times, then captured once and replayed.

    Args:
        fn: the computation (see the module rules).
        warmup: eager calls before the capture (at least 1: it initialises lazy state such as cuDNN
            handles, the AMP scaler's scale and optimizer buffers).
        before_capture: called right before the capture (e.g. set the gradients that the capture must
            allocate to ``None``).
    """

    def __init__(self, fn: Callable[..., Any], warmup: int = 3,
                 before_capture: Optional[Callable[[], None]] = None) -> None:
        if warmup < 1:
            raise ValueError(f'GraphedCall needs at least one warm-up call, got warmup={warmup}')
        self.fn, self.warmup, self.before_capture = fn, warmup, before_capture
        self.calls = 0
        self.graph: Optional['torch.cuda.CUDAGraph'] = None
        self.static_inputs: List[torch.Tensor] = []
        self.static_output: Any = None
        self._stream: Optional['torch.cuda.Stream'] = None

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def __call__(self, *inputs: torch.Tensor) -> Any:
        self.calls += 1
        if self.graph is None and self.calls <= self.warmup:
            return self._side_stream(self.fn, *inputs)
        if self.graph is None:
            self._capture(inputs)
        for static, new in zip(self.static_inputs, inputs):
            static.copy_(new, non_blocking=True)
        self.graph.replay()
        return self.static_output

    def _side_stream(self, fn: Callable[..., Any], *inputs: torch.Tensor) -> Any:
        if self._stream is None:
            self._stream = torch.cuda.Stream()
        current = torch.cuda.current_stream()
        self._stream.wait_stream(current)
        with torch.cuda.stream(self._stream):
            out = fn(*inputs)
        current.wait_stream(self._stream)
        return out

    def _capture(self, inputs: Sequence[torch.Tensor]) -> None:
        self.static_inputs = [t.detach().clone() for t in inputs]
        if self.before_capture is not None:
            self.before_capture()
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        # thread_local: a data loader's pin-memory thread may allocate while this thread captures
        with torch.cuda.graph(graph, stream=self._stream, capture_error_mode='thread_local'):
            self.static_output = self.fn(*self.static_inputs)
        self.graph = graph
