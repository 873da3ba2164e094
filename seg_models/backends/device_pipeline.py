"""Camera frames through a PyTorch module on its device, pre- and post-processing there too.

On a GPU the network takes milliseconds, while the host path around it (resizing and normalising
full camera frames on the CPU, upsampling class ids, pasting Mask R-CNN masks) would take longer
than the network. So a GPU backend's frames go to the device once, as uint8, through pinned host
buffers on one CUDA stream per backend; resizing, normalisation, the network, the bilinear
upsampling of logits to camera size and the argmax run there, and only uint8 class ids (semantic)
or the small detection outputs and box-sized mask crops (instance) come back. Buffers are kept per
frame shape, so a steady stream of frames allocates nothing new. The same code runs on the CPU
(no pinning, no stream), which is how CI checks it.

Where the computation is static (the semantic network at a fixed camera and input size), it is
recorded once as a CUDA graph per frame shape and replayed: one launch instead of hundreds.
"""
from __future__ import annotations

import contextlib
import copy
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import nn

MAX_FRAME_SHAPES = 8  # distinct (batch, camera size) shapes kept with buffers and graphs; more: start over


@dataclass(frozen=True)
class DeviceOptions:
    """How a module runs on a CUDA device (docs/backends_and_gpu.md, "The GPU path": the measurements behind
    the defaults)."""

    half_weights: bool = True  # fp16: the semantic network's weights converted (else autocast over fp32 weights)
    # NHWC layouts: Tensor Core convolutions without transposes. None: for networks without grouped
    # (depthwise) convolutions, which run slower in NHWC (MobileNetV3: 7.8 against 7.2 ms)
    channels_last: Optional[bool] = None
    cuda_graphs: bool = True  # replay static computations (semantic) as CUDA graphs


class StageClock:
    """Wall time of each stage of one call: CUDA events on a GPU (read once, after the call's
    synchronisation), ``perf_counter`` on the CPU."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.marks: list[tuple[str, object]] = []

    def mark(self, stage: str) -> None:
        """The stage named ``stage`` ends now (the first mark starts the clock)."""
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append((stage, event))
        else:
            self.marks.append((stage, time.perf_counter()))

    def durations_ms(self) -> dict[str, float]:
        """Milliseconds per stage, after the call finished on the device; repeated stages add up."""
        durations: dict[str, float] = {}
        for (_, start), (stage, end) in zip(self.marks, self.marks[1:]):
            elapsed = start.elapsed_time(end) if self.cuda else (end - start) * 1e3
            durations[stage] = durations.get(stage, 0.0) + elapsed
        return durations


class DevicePipeline:
    """One backend's module on its device: frames up once, computation there, small results back.

    Calls are serialised (one stream, shared buffers); ``session`` holds the device for a whole
    instance call, so the mask paste runs on the same stream as the network before it.
    """

    def __init__(self, module: nn.Module, device: str, precision: str = 'fp32',
                 options: DeviceOptions = DeviceOptions()) -> None:
        self.device = torch.device(device)
        self.cuda = self.device.type == 'cuda'
        self.precision = precision
        self.options = options
        self.module, halved = prepared_module(module, self.device, precision, options)
        self.autocast = self.cuda and precision == 'fp16' and not halved
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None
        self._lock = threading.Lock()
        self._buffers: dict[tuple, torch.Tensor] = {}
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, tuple]] = {}
        self.clock: Optional[StageClock] = None  # set by a benchmark to time the stages of calls

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """The device to one caller: its stream current, no autograd, and the module's autocast
        where fp16 runs over fp32 weights."""
        with self._lock, torch.inference_mode(), \
                (torch.cuda.stream(self.stream) if self.cuda else contextlib.nullcontext()), \
                (torch.autocast('cuda', dtype=torch.float16) if self.autocast else contextlib.nullcontext()), \
                strict_fp32_convolutions(self.cuda and self.precision == 'fp32'):
            yield

    def mark(self, stage: str) -> None:
        if self.clock is not None:
            self.clock.mark(stage)

    def upload(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        """RGB uint8 frames of one size -> (N, H, W, 3) uint8 on the device, through a pinned buffer."""
        shape = (len(frames), *frames[0].shape)
        host = self._buffer('frames', shape, torch.uint8, on_host=True)
        host_view = host.numpy()
        for index, frame in enumerate(frames):
            host_view[index] = frame
        if not self.cuda:
            return host
        device = self._buffer('frames', shape, torch.uint8, on_host=False)
        device.copy_(host, non_blocking=True)
        return device

    def download(self, tensors: Sequence[torch.Tensor]) -> list[np.ndarray]:
        """Device tensors -> host arrays of their own, through pinned buffers; waits for the device."""
        hosts = [self._buffer(f'result{index}', tuple(tensor.shape), tensor.dtype, on_host=True)
                 for index, tensor in enumerate(tensors)]
        for host, tensor in zip(hosts, tensors):
            host.copy_(tensor, non_blocking=True)
        if self.cuda:
            self.stream.synchronize()
        return [host.numpy().copy() for host in hosts]

    def download_flat(self, pieces: Sequence[torch.Tensor]) -> list[np.ndarray]:
        """Many small device tensors (mask crops) in one transfer through the pinned buffers."""
        return download_in_one_transfer(pieces, lambda flat: self.download([flat])[0])

    def run(self, frames: torch.Tensor, input_size: tuple[int, int], static: bool) -> tuple[torch.Tensor, ...]:
        """``module.camera_forward`` on uploaded frames: replayed from a CUDA graph where
        ``static`` and graphs are on (recorded at the first call of each frame shape), else eagerly."""
        if not (static and self.cuda and self.options.cuda_graphs):
            return self.module.camera_forward(frames, input_size, self.mark)
        key = (frames.data_ptr(), tuple(frames.shape), tuple(input_size))
        if key not in self._graphs:
            self._graphs[key] = self._record(frames, input_size)
        graph, outputs = self._graphs[key]
        graph.replay()
        self.mark('model')  # preprocess, model and postprocess are one replay
        return outputs

    def _record(self, frames: torch.Tensor, input_size: tuple[int, int]):
        """A CUDA graph of ``camera_forward`` reading ``frames``' buffer, after warm-up runs on a
        side stream (cuDNN picks its kernels there, outside the recording)."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self.module.camera_forward(frames, input_size)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = self.module.camera_forward(frames, input_size)
        return graph, outputs

    def _buffer(self, name: str, shape: tuple, dtype: torch.dtype, on_host: bool) -> torch.Tensor:
        key = (name, shape, dtype, on_host)
        buffer = self._buffers.get(key)
        if buffer is None:
            if len(self._buffers) >= 4 * MAX_FRAME_SHAPES:  # cameras changing sizes all the time: start over
                self._buffers.clear()
                self._graphs.clear()
            if on_host:
                buffer = torch.empty(shape, dtype=dtype, pin_memory=self.cuda)
            else:
                buffer = torch.empty(shape, dtype=dtype, device=self.device)
            self._buffers[key] = buffer
        return buffer


def download_in_one_transfer(pieces: Sequence[torch.Tensor],
                             download: Callable[[torch.Tensor], np.ndarray] = lambda flat: flat.cpu().numpy()
                             ) -> list[np.ndarray]:
    """Many small tensors of one device (mask crops) as host arrays, each back in its shape, through
    one ``download`` (flat tensor -> host array) of them all concatenated."""
    if not pieces:
        return []
    flat = download(torch.cat([piece.reshape(-1) for piece in pieces]))
    ends = np.cumsum([piece.numel() for piece in pieces])
    return [part.reshape(tuple(piece.shape)) for part, piece in zip(np.split(flat, ends[:-1]), pieces)]


def prepared_module(module: nn.Module, device: torch.device, precision: str,
                    options: DeviceOptions) -> tuple[nn.Module, bool]:
    """``module`` on ``device`` as ``options`` say, and whether its network was converted to fp16.

    On CUDA at fp16, a semantic graph's network gets fp16 weights (in a copy: the fp32 module may
    still be exported; its normalisation constants stay fp32); Mask R-CNN runs under autocast
    instead, which keeps its box decoding and NMS in fp32. Channels-last layouts where asked.
    """
    module = module.eval()
    if device.type != 'cuda':
        return module.to(device), False
    halved = precision == 'fp16' and options.half_weights and hasattr(module, 'network')
    if halved:
        module = copy.deepcopy(module)
        module.network.half()
    elif precision == 'fp16' and hasattr(module, 'model'):  # Mask R-CNN under autocast
        from seg_models.models.instance_graph import box_predictor_in_fp32

        box_predictor_in_fp32(module.model)
    module = module.to(device)
    channels_last = options.channels_last
    if channels_last is None:
        channels_last = not any(isinstance(layer, nn.Conv2d) and layer.groups > 1 for layer in module.modules())
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    return module, halved


@contextlib.contextmanager
def strict_fp32_convolutions(strict: bool) -> Iterator[None]:
    """cuDNN convolutions in true fp32 while ``strict``: PyTorch lets them use TF32 (10-bit
    mantissa) by default on Ampere and later, which moved Mask R-CNN boxes (IoU 0.88 against the
    CPU) where fp32 was asked for. fp16 is the fast path; fp32 means fp32."""
    if not strict:
        yield
        return
    allowed = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = allowed
