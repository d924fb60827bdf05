"""Benchmark: whole deep-feature extraction against the raw model forward pass at the same batch size.

The whole extraction is what ``extract_deep_features`` + ``write_deep_features`` do for a cohort: decode the
image and mask files in DataLoader workers, crop, resize, normalise, run the model, write the CSV. The raw
forward pass is the same model, batch size, dtype and memory format on random tensors already on the device.
Targets (issue 4): at least 90% of raw on a CPU (float32), at least 70% of raw on a GPU (bf16 autocast,
channels-last, pinned memory, one decoding worker per spare core).

    python benchmarks/bench_deep.py --quick              # a small CPU run
    python benchmarks/bench_deep.py                      # CPU, or CUDA when present (--device auto)
    python benchmarks/bench_deep.py --device cuda --images 20000 --batch-size 256
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_cohort(folder: Path, n_images: int, unique: int, shape: tuple[int, int], fmt: str):
    """``n_images`` cases over ``unique`` synthetic files (each case still decodes its own file read)."""
    from Rad4XCNNLogic.cohort.manifest import Cohort, read_manifest
    from Rad4XCNNLogic.cohort.synthetic import make_synthetic_cohort

    base = read_manifest(make_synthetic_cohort(folder, unique, seed=0, shape=shape, fmt=fmt))
    cases = [replace(base.cases[i % unique], case_id=f"case{i:06d}") for i in range(n_images)]
    return Cohort(cases, [], base.source)


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the DataLoader workers), user + system."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def decode_rate(cohort, backbone, n: int = 32) -> float:
    """Images per second of one process reading, cropping and resizing cases (no model): the input
    pipeline's cost per worker."""
    from Rad4XCNNLogic.features.preprocessing import CaseDataset

    dataset = CaseDataset(cohort.cases[:n], backbone.preprocess)
    dataset[0]
    start = time.perf_counter()
    for i in range(len(dataset)):
        dataset[i]
    return len(dataset) / (time.perf_counter() - start)


def raw_forward(backbone, device, dtype, batch_size: int, images: int, channels_last: bool):
    """Images per second of the model alone on inputs already on the device, and images per CPU second."""
    import torch

    from Rad4XCNNLogic.features.backbones import pooled_features

    net = backbone.model.eval().to(device)
    size = backbone.preprocess.input_size
    x = torch.randn(batch_size, 3, size, size, device=device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    autocast = dtype != torch.float32

    def step():
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=autocast):
            return (
                pooled_features(net, x).float().cpu()
            )  # the features come back to the host, as in extraction

    iterations = max(3, -(-images // batch_size))
    with torch.inference_mode():
        for _ in range(3 if device.type == "cpu" else 10):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, cpu = time.perf_counter(), cpu_seconds()
        for _ in range(iterations):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    return iterations * batch_size / seconds, iterations * batch_size / cpu


def main(argv=None) -> int:
    from Rad4XCNNLogic.infra.environment import cpu_name

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a small run (CPU: 32 images)")
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", help="auto: bfloat16 autocast on CUDA, float32 on CPU")
    parser.add_argument("--batch-size", type=int, help="default 32 on CPU, 256 on GPU")
    parser.add_argument("--images", type=int, help="images in the cohort (default 96 on CPU, 8192 on GPU)")
    parser.add_argument("--unique", type=int, default=64, help="distinct synthetic images (default 64)")
    parser.add_argument(
        "--shape", default="448x560", help="image size ROWSxCOLS (default 448x560, like BUSI)"
    )
    parser.add_argument("--format", choices=("png", "nrrd"), default="png")
    parser.add_argument("--workers", type=int, help="decoding processes (default: the engine's choice)")
    parser.add_argument("--repeat", type=int, default=3, help="alternating raw/whole runs; the best counts")
    args = parser.parse_args(argv)

    import timm
    import torch

    from Rad4XCNNLogic.features.backbones import build_backbone, resolve_device, resolve_dtype
    from Rad4XCNNLogic.features.deep import extract_deep_features, write_deep_features

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    gpu = device.type != "cpu"
    batch = args.batch_size or (256 if gpu else 32)
    images = args.images or ((1024 if args.quick else 8192) if gpu else (32 if args.quick else 96))
    rows, cols = (int(v) for v in args.shape.lower().split("x"))

    print(f"machine: {cpu_name()}, {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}")
    if device.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(device)}")
    print(f"torch {torch.__version__}, timm {timm.__version__}, python {platform.python_version()}")
    print(f"model {args.model}, device {device}, dtype {str(dtype).replace('torch.', '')}, batch {batch}")

    with tempfile.TemporaryDirectory(prefix="bench_deep_") as tmp:
        t0 = time.perf_counter()
        cohort = make_cohort(
            Path(tmp) / "cohort", images, min(args.unique, images), (rows, cols), args.format
        )
        distinct = min(args.unique, images)
        print(
            f"cohort: {images} cases ({distinct} distinct {args.format} files, {rows}x{cols}), "
            f"made in {time.perf_counter() - t0:.1f} s"
        )
        backbone = build_backbone(args.model, seed=0)
        per_worker = decode_rate(cohort, backbone)
        print(f"input pipeline alone (read, crop, resize; one process): {per_worker:.1f} images/s")
        # raw and whole runs alternate, so that load from other processes hits both alike; the best counts.
        # Images per CPU-second (this process and its workers) is printed too: on a machine shared with
        # other jobs it is steadier than the wall-clock rate.
        best = {"raw": 0.0, "whole": 0.0, "raw_cpu": 0.0, "whole_cpu": 0.0}
        for run in range(args.repeat):
            raw, raw_cpu = raw_forward(
                backbone, device, dtype, batch, images, channels_last=device.type == "cuda"
            )
            start, cpu = time.perf_counter(), cpu_seconds()
            result = extract_deep_features(
                cohort,
                backbone,
                device=str(device),
                dtype=args.dtype,
                batch_size=batch,
                num_workers=args.workers,
                progress=False,
            )
            write_deep_features(result, Path(tmp) / "deep_features.csv")
            seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
            whole, whole_cpu = len(result.features) / seconds, len(result.features) / cpu
            for key, value in (
                ("raw", raw),
                ("whole", whole),
                ("raw_cpu", raw_cpu),
                ("whole_cpu", whole_cpu),
            ):
                best[key] = max(best[key], value)
            print(
                f"run {run + 1}: raw {raw:9.1f} images/s, whole {whole:9.1f} images/s "
                f"({seconds:.2f} s, {result.settings['num_workers']} workers), ratio {whole / raw:.3f}; "
                f"per CPU-second: raw {raw_cpu:.2f}, whole {whole_cpu:.2f}, ratio {whole_cpu / raw_cpu:.3f}"
            )
    target = 0.7 if gpu else 0.9
    ratio = best["whole"] / best["raw"]
    where = "GPU" if gpu else "CPU"
    print(f"best raw forward:      {best['raw']:9.1f} images/s")
    print(f"best whole extraction: {best['whole']:9.1f} images/s")
    print(
        f"ratio whole/raw:       {ratio:9.3f}  "
        f"({'meets' if ratio >= target else 'misses'} the target {target:.0%} on {where})"
    )
    if not gpu:
        print(f"ratio per CPU-second:  {best['whole_cpu'] / best['raw_cpu']:9.3f}")
    else:
        print(f"workers needed to feed the raw rate: about {best['raw'] / per_worker:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
