"""Benchmark: seconds per case of each CAM method against the model's raw forward pass; the cost of checking
each map (faithfulness, randomisation test) against the map itself; voxel-based radiomic maps per feature.

For each model, ``compute_cams`` runs on a synthetic cohort (crop, resize, CAM, map back to the image,
metrics, agreement; no files written) with each method on its own. The anchor is the raw forward pass of
the same model on random tensors at the same batch size, measured in the same run: the ratio says how many
forward passes' worth of time a method costs per case (Grad-CAM: a forward and a backward pass; ScoreCAM:
one forward pass per channel of the target layer). ScoreCAM is also timed against pytorch-grad-cam's own
ScoreCAM on one case (the library builds every masked input of a case at once).

    python benchmarks/bench_cam.py --quick                        # resnet18 at 112 px, a few cases
    python benchmarks/bench_cam.py                                # resnet18 and resnet50 at 224 px, CPU
    python benchmarks/bench_cam.py --device cuda --cases 64 --batch-size 128
    python benchmarks/bench_cam.py --checks --quick               # faithfulness + randomisation cost
    python benchmarks/bench_cam.py --featuremaps                  # voxel maps of a 100 x 100 px lesion

The checks' anchor is the map itself: ``compute_cams`` reports the seconds per case spent on the map, on
ROAD + deletion + insertion, and on the randomisation cascade, in the same run. The voxel-based maps'
anchor is a direct PyRadiomics voxel-based call on the same image and feature (``extractor.execute(...,
voxelBased=True)``), measured in the same run; maps then run over features in 1 and 2 worker processes.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def forward_seconds_per_image(net, size: int, batch: int, device, repeats: int = 3) -> float:
    """The raw anchor: the model's forward pass on random tensors already on the device."""
    import torch

    x = torch.randn(batch, 3, size, size, device=device)
    with torch.no_grad():
        net(x)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            net(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
    return best / batch


def library_scorecam_seconds(net, layer, x, target: int, batch: int) -> float:
    """pytorch-grad-cam's ScoreCAM on one case, with the same channel batch size."""
    import torch
    from pytorch_grad_cam import ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam = ScoreCAM(net, [layer])
    cam.batch_size = batch
    t0 = time.perf_counter()
    with torch.no_grad():
        cam(x, [ClassifierOutputTarget(target)])
    seconds = time.perf_counter() - t0
    cam.activations_and_grads.release()
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,resnet50")
    parser.add_argument("--methods", default="gradcam,gradcam++,layercam,eigencam,scorecam")
    parser.add_argument("--cases", type=int, default=8, help="cases per gradient / EigenCAM method")
    parser.add_argument("--scorecam-cases", type=int, default=1, help="cases for ScoreCAM (slow on a CPU)")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--library-models", default="resnet18", help="models whose ScoreCAM is also timed in the library"
    )
    parser.add_argument("--quick", action="store_true", help="resnet18 at 112 px, 4 cases")
    parser.add_argument(
        "--checks", action="store_true", help="time faithfulness and randomisation per method"
    )
    parser.add_argument("--randomisation", default="cascade", help="cascade or all (with --checks)")
    parser.add_argument("--featuremaps", action="store_true", help="time voxel-based radiomic maps instead")
    parser.add_argument(
        "--features",
        default="original_firstorder_Mean,original_glcm_Contrast,original_glrlm_RunEntropy,"
        "original_glszm_ZoneEntropy,original_gldm_DependenceEntropy,original_ngtdm_Coarseness",
    )
    parser.add_argument("--kernel-radius", type=int, default=2)
    parser.add_argument("--lesion", type=int, default=100, help="side of the square lesion, pixels")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.input_size, args.cases = "resnet18", 112, 4
    logging.basicConfig(level=logging.ERROR)
    if args.featuremaps:
        return bench_featuremaps(args)

    import timm
    import torch

    from Rad4XCNNLogic.cam.maps import compute_cams, resolve_target_layer
    from Rad4XCNNLogic.cam.settings import CamConfig, check_methods
    from Rad4XCNNLogic.cohort.manifest import read_manifest
    from Rad4XCNNLogic.cohort.synthetic import make_synthetic_cohort
    from Rad4XCNNLogic.features.backbones import (
        PreprocessConfig,
        build_backbone,
        resolve_device,
        save_checkpoint,
    )
    from Rad4XCNNLogic.features.preprocessing import preprocess_case
    from Rad4XCNNLogic.infra.environment import cpu_name

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    methods = check_methods(args.methods)
    print(f"machine: {cpu_name()}, {torch.get_num_threads()} torch threads; device {device}")
    if device.type == "cuda":
        print(f"card: {torch.cuda.get_device_name(device)}")
    try:
        from importlib.metadata import version

        grad_cam = version("grad-cam")
    except Exception:
        grad_cam = "?"
    print(f"torch {torch.__version__}, timm {timm.__version__}, grad-cam {grad_cam}")
    print(
        f"input {args.input_size} px, batch {args.batch_size}, {args.cases} cases per method "
        f"({args.scorecam_cases} for ScoreCAM)"
    )
    size = args.input_size
    with tempfile.TemporaryDirectory() as tmp:
        n = max(args.cases, args.scorecam_cases)
        cohort = read_manifest(make_synthetic_cohort(Path(tmp) / "cohort", n, seed=0, shape=(256, 320)))
        for name in args.models.split(","):
            backbone = build_backbone(name, num_classes=2, input_size=size)
            config = PreprocessConfig.for_model(name, input_size=size)
            path = Path(tmp) / f"{name}.pt"
            ckpt = save_checkpoint(path, backbone.model, name, config, class_names=["a", "b"])
            net = backbone.model.eval().to(device)
            anchor = forward_seconds_per_image(net, size, args.batch_size, device)
            layer = resolve_target_layer(net, None, size)
            common = {"device": args.device, "progress": False, "keep_maps": False}
            section = CamConfig(batch_size=args.batch_size, faithfulness=False, randomisation="none")
            compute_cams(
                cohort, ckpt, replace(section, methods=["gradcam"]), cases=cohort.case_ids[:1], **common
            )  # warm-up
            if args.checks:
                bench_checks(args, cohort, ckpt, methods, common, section, name, layer)
                continue
            print(f"\n{name}: target layer {layer.name}; raw forward pass {1000 * anchor:.1f} ms per image")
            print(f"  {'method':<10} {'CAM s/case':>11} {'x forward':>10} {'all-in s/case':>14}")
            for method in methods:
                cases = cohort.case_ids[: args.scorecam_cases if method == "scorecam" else args.cases]
                t0 = time.perf_counter()
                result = compute_cams(cohort, ckpt, replace(section, methods=[method]), cases=cases, **common)
                wall = (time.perf_counter() - t0) / len(cases)
                cam_s = result.settings["seconds_per_case"][method]
                extra = ""
                if method == "scorecam":
                    channels = result.settings["target_layer_channels"]
                    extra = f"  ({channels} forward passes per case)"
                print(f"  {method:<10} {cam_s:>11.3f} {cam_s / anchor:>10.1f} {wall:>14.3f}{extra}")
                if method == "scorecam" and name in args.library_models.split(","):
                    x, _ = preprocess_case(cohort.cases[0].load(), config)
                    lib = library_scorecam_seconds(net, layer.module, x[None].to(device), 1, args.batch_size)
                    ours = compute_cams(
                        cohort,
                        ckpt,
                        replace(section, methods=["scorecam"]),
                        cases=cohort.case_ids[:1],
                        **common,
                    )
                    ours_s = ours.settings["seconds_per_case"]["scorecam"]
                    mb = 4 * 3 * size * size / 2**20  # one masked float32 input
                    print(
                        f"  ScoreCAM, one case: ours {ours_s:.2f} s, pytorch-grad-cam's {lib:.2f} s "
                        f"(ours / library = {ours_s / lib:.2f}); masked inputs held at once: ours "
                        f"{args.batch_size * mb:.0f} MB, the library's {channels * mb:.0f} MB"
                    )
    return 0


def bench_checks(args, cohort, ckpt, methods, common, section, name, layer) -> None:
    """Seconds per case of each method's map, its faithfulness scores and its randomisation test."""
    from Rad4XCNNLogic.cam.maps import compute_cams

    checks = replace(section, faithfulness=True, randomisation=args.randomisation)
    print(f"\n{name}: target layer {layer.name}; randomisation {args.randomisation}")
    print(
        f"  {'method':<10} {'map s/case':>11} {'faithful s':>11} {'x map':>7} {'random s':>10} {'x map':>7}"
    )
    for method in methods:
        cases = cohort.case_ids[: args.scorecam_cases if method == "scorecam" else args.cases]
        result = compute_cams(cohort, ckpt, replace(checks, methods=[method]), cases=cases, **common)
        cam_s = result.settings["seconds_per_case"][method]
        faith = result.settings["check_seconds_per_case"]["faithfulness"]
        rand = result.settings["check_seconds_per_case"]["randomisation"]
        steps = result.randomisation["step"].nunique()
        print(
            f"  {method:<10} {cam_s:>11.3f} {faith:>11.3f} {faith / cam_s:>7.1f} {rand:>10.3f} "
            f"{rand / cam_s:>7.1f}  ({steps} randomisation steps)"
        )


def bench_featuremaps(args) -> int:
    """Seconds per feature of a voxel-based map of one square lesion, against a direct PyRadiomics call."""
    import numpy as np
    import SimpleITK as sitk
    from radiomics import featureextractor

    from Rad4XCNNLogic.cam.featuremaps import compute_feature_maps
    from Rad4XCNNLogic.cohort.imageio import Image2D, write_image
    from Rad4XCNNLogic.cohort.manifest import read_manifest
    from Rad4XCNNLogic.features.radiomics import _quiet_pyradiomics, resolve_params
    from Rad4XCNNLogic.infra.environment import cpu_name

    _quiet_pyradiomics()
    features = [f.strip() for f in args.features.split(",") if f.strip()]
    side, pad, r = int(args.lesion), 20, int(args.kernel_radius)
    rng = np.random.default_rng(0)
    shape = (side + 2 * pad, side + 2 * pad)
    image = rng.normal(90, 25, shape).clip(0, 255).astype(np.uint8)
    mask = np.zeros(shape, np.uint8)
    mask[pad : pad + side, pad : pad + side] = 1
    print(f"machine: {cpu_name()}; lesion {side} x {side} = {side * side} pixels, kernel radius {r}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_image(folder / "img.nrrd", image, like=Image2D(image))
        write_image(folder / "msk.nrrd", mask, like=Image2D(mask))
        (folder / "m.csv").write_text("case_id,image,mask\nc,img.nrrd,msk.nrrd\n")
        cohort = read_manifest(folder / "m.csv")
        params = resolve_params("paper")
        setting = {**params.setting, "label": 1, "force2D": True, "force2Ddimension": 0}
        image3d = sitk.JoinSeries(sitk.GetImageFromArray(image))
        mask3d = sitk.JoinSeries(sitk.GetImageFromArray(mask))
        print(f"  {'feature':<34} {'ours s':>8} {'direct s':>9} {'ours/direct':>12}")
        total = 0.0
        for name in features:
            _, feature_class, feature = name.split("_", 2)
            extractor = featureextractor.RadiomicsFeatureExtractor(
                {"setting": setting, "voxelSetting": {"kernelRadius": r, "maskedKernel": True}}
            )
            extractor.disableAllFeatures()
            extractor.enableFeaturesByName(**{feature_class: [feature]})
            ours = direct = float("inf")
            for _ in range(2):  # interleaved, best of two: the machine is shared
                t0 = time.perf_counter()
                compute_feature_maps(cohort, name, params=params, kernel_radius=r, keep_maps=False)
                ours = min(ours, time.perf_counter() - t0)
                t0 = time.perf_counter()
                extractor.execute(image3d, mask3d, label=1, voxelBased=True)
                direct = min(direct, time.perf_counter() - t0)
            total += ours
            print(f"  {name:<34} {ours:>8.2f} {direct:>9.2f} {ours / direct:>12.2f}")
        for jobs in (1, 2):
            t0 = time.perf_counter()
            compute_feature_maps(cohort, features, params=params, kernel_radius=r, keep_maps=False, jobs=jobs)
            wall = time.perf_counter() - t0
            per = wall / len(features)
            print(
                f"  all {len(features)} features, {jobs} process(es): {wall:.2f} s ({per:.2f} s per feature)"
            )
        print(f"  sum of the single-feature runs: {total:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
