"""Time each CUDA kernel against its CPU reference and against the memory-bandwidth floor.

Needs a CUDA GPU and CuPy. Inputs are random, at the sizes a 1080p stream with 8 faces
gives. The floor of a kernel is the bytes it must read and write divided by the
device's copy bandwidth, measured here by a large device-to-device copy; the ratio
kernel / floor says how far a kernel is from memory-bound. CPU references run in the
same process, so speedups are ratios on one machine.

    python -m benchmarks.kernels            # prints a markdown table
"""

from __future__ import annotations

import sys
import time

import cv2
import numpy as np

from veil.engines import align
from veil.kernels import colour, composite, obfuscate, preprocess, warp
from veil.stream.anonymisers.classic import Anonymiser
from veil.stream.faces import Faces

HEIGHT, WIDTH, FACES = 1080, 1920, 8


def gpu_ms(call, repeats: int = 50) -> float:
    import torch

    call()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        call()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def cpu_ms(call, repeats: int = 5) -> float:
    call()
    begin = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - begin) / repeats * 1000


def copy_bandwidth() -> float:
    """Bytes per ms of a 1 GiB device-to-device copy (read + write)."""
    import torch

    source = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    target = torch.empty_like(source)
    return 2 * source.numel() / gpu_ms(lambda: target.copy_(source), 10)


def cases(rng: np.random.Generator):
    """(name, gpu call, cpu reference call, bytes moved) for each kernel."""
    import torch

    frame = rng.integers(0, 256, (HEIGHT, WIDTH, 3), np.uint8)
    frame_gpu = torch.from_numpy(frame).cuda()
    centres = rng.uniform([200, 200], [WIDTH - 200, HEIGHT - 200], (FACES, 2))
    matrices = np.stack([align.similarity(align.TEMPLATE * 1.8 + c - align.TEMPLATE.mean(0) * 1.8) for c in centres]).astype(np.float32)
    crops = rng.uniform(0, 255, (FACES, align.SIZE, align.SIZE, 3)).astype(np.float32)
    flows = rng.uniform(-2, 2, (FACES, align.SIZE, align.SIZE, 2)).astype(np.float32)
    identity = np.tile(np.float32([[1, 0, 0], [0, 1, 0]]), (FACES, 1, 1))
    crops_gpu, flows_gpu, identity_gpu = (torch.from_numpy(a).cuda() for a in (crops, flows, identity))
    boxes = np.column_stack([centres - 90, centres + 90]).astype(np.float32)
    crop_bytes = crops.nbytes
    face_px = int(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1).sum())
    yield ("warp (8 crops + flow)", lambda: warp.warp(crops_gpu, identity_gpu, flows_gpu),
           lambda: warp.warp_reference(crops, identity, flows), 2 * crop_bytes + flows.nbytes)
    yield ("composite (8 faces, 1080p)", lambda: composite.composite(frame_gpu, crops_gpu, matrices, align.BLEND_ALPHA),
           lambda: composite.composite_reference(frame, crops, matrices), crop_bytes + 2 * 3 * 180 * 180 * FACES)
    yield ("preprocess (8 generator inputs)", lambda: preprocess.generator_input(frame_gpu, matrices),
           lambda: [align.network_input(align.crop(frame, m)[:, :, ::-1], align.TEMPLATE) for m in matrices], crop_bytes // 4 * 3 + crop_bytes)
    yield ("preprocess (detector input 960x544)", lambda: preprocess.detector_input(frame_gpu, 960, 544),
           lambda: cv2.resize(frame, (960, 544)).astype(np.float32), frame.nbytes + 960 * 544 * 3 * 4)
    for mode in ("pixelate", "blur"):
        anonymiser = Anonymiser(mode=mode)
        yield (f"obfuscate {mode} (8 faces)", lambda a=anonymiser: obfuscate.obscure(frame_gpu, a.regions(boxes, *frame_gpu.shape[:2]), a.hiding(), out=frame_gpu),
               lambda a=anonymiser: a.apply(frame, Faces.from_boxes(boxes)), 2 * 3 * face_px)
    yield ("colour BGR -> I420 (1080p)", lambda: colour.bgr_to_i420(frame_gpu),
           lambda: cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420), frame.nbytes * 3 // 2)
    y, u, v = colour.bgr_to_i420(frame_gpu)
    y_host, u_host, v_host = (p.cpu().numpy() for p in (y, u, v))
    yield ("colour I420 -> BGR (1080p)", lambda: colour.i420_to_bgr(y, u, v),
           lambda: colour.yuv420_to_bgr_reference(y_host, u_host, v_host), frame.nbytes * 3 // 2)


def main() -> None:
    import torch

    if not torch.cuda.is_available():
        sys.exit("python -m benchmarks.kernels needs a CUDA GPU (and CuPy: pip install 'veil[gpu]')")
    bandwidth = copy_bandwidth()
    print(f"# Kernels on {torch.cuda.get_device_name()}: copy bandwidth {bandwidth / 1e6:.0f} GB/s\n")
    print("| kernel | GPU ms | floor ms | GPU / floor | CPU reference ms | CPU / GPU |")
    print("|---|---|---|---|---|---|")
    for name, on_gpu, on_cpu, moved in cases(np.random.default_rng(0)):
        gpu, cpu, floor = gpu_ms(on_gpu), cpu_ms(on_cpu), moved / bandwidth
        print(f"| {name} | {gpu:.3f} | {floor:.4f} | {gpu / floor:.1f} | {cpu:.2f} | {cpu / gpu:.0f} |")


if __name__ == "__main__":
    main()
