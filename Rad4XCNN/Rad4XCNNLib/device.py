"""The Device panel's logic: which torch is installed and how it was built, the GPUs it sees, the device a
run will use, the PyTorch extension's reinstall with a chosen backend, and a CPU time estimate for a run.

The widget only shows :func:`torch_report` and :func:`estimate_run_time` and calls
:func:`reinstall_torch`; everything here runs without Qt. Whatever imports torch (the report, the measured
rates) runs in a child process (:func:`torch_report_in_child`, :func:`measure_rates_in_child`: this module
run as ``python -m Rad4XCNNLib.device``), so that Slicer's GUI thread never imports torch.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from Rad4XCNNLib import background, compatibility, dependencies

log = logging.getLogger(__name__)

#: Backends offered for a reinstall: the PyTorch extension passes them to light-the-torch as
#: ``--pytorch-computation-backend`` ("cpu", "cu118", "cu121", ...); "automatic" lets it detect the driver.
AUTOMATIC = "automatic"
SUGGESTED_BACKENDS = (AUTOMATIC, "cpu", "cu118", "cu121", "cu124", "cu126", "cu128")


@dataclass
class GPU:
    """One accelerator that torch sees."""

    index: int
    name: str
    memory_bytes: int

    def text(self) -> str:
        return f"cuda:{self.index} {self.name} ({self.memory_bytes / 2**30:.1f} GiB)"


@dataclass
class TorchReport:
    """What torch is installed and what it sees (all None/empty when torch is not installed)."""

    installed: bool
    version: str | None = None
    build: str = ""
    gpus: list[GPU] = field(default_factory=list)
    mps: bool = False
    device: str = ""
    problem: str | None = None

    def lines(self) -> list[str]:
        """The panel's text, one line per fact."""
        if not self.installed:
            return ["PyTorch: not installed (installed on first Run, or with the button below)"] + (
                [self.problem] if self.problem else []
            )
        lines = [f"PyTorch {self.version} ({self.build})"]
        lines += [f"GPU {gpu.text()}" for gpu in self.gpus] or ["GPU: none seen by PyTorch"]
        if self.mps:
            lines.append("Apple MPS: available")
        lines.append(f"Runs use: {self.device}")
        if self.problem:
            lines.append(self.problem)
        return lines

    @classmethod
    def from_dict(cls, data: Mapping) -> TorchReport:
        """The report as :func:`dataclasses.asdict` wrote it (in the child process), read back."""
        return cls(**{**data, "gpus": [GPU(**gpu) for gpu in data.get("gpus", [])]})


def torch_report(requested: str = "auto", torch_module=None) -> TorchReport:
    """Describe the installed torch: version, build (CUDA x.y / ROCm / CPU), GPUs with memory, MPS, and the
    device that ``requested`` ("auto", "cpu", "cuda", "cuda:N", "mps") resolves to for a run."""
    if torch_module is None:
        if importlib.util.find_spec("torch") is None:
            return TorchReport(False, problem=compatibility.platform_problem())
        import torch as torch_module
    torch = torch_module
    cuda, hip = getattr(torch.version, "cuda", None), getattr(torch.version, "hip", None)
    build = f"CUDA {cuda}" if cuda else f"ROCm {hip}" if hip else "CPU only"
    gpus = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            gpus.append(GPU(index, props.name, int(props.total_memory)))
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if mps and not cuda:
        build += ", MPS"
    report = TorchReport(True, str(torch.__version__), build, gpus, mps)
    try:
        from Rad4XCNNLogic.features.backbones import resolve_device

        report.device = str(resolve_device(requested))
    except Exception as error:  # Rad4XCNNError: the device asked for is not on this machine
        report.device = f"none ({error})"
    report.problem = compatibility.platform_problem(torch_version=report.version)
    return report


def reinstall_torch(backend: str, uninstall: Callable[[], object], install: Callable[..., object]):
    """Reinstall torch and torchvision with ``backend`` through the PyTorch extension.

    ``uninstall`` and ``install`` are ``PyTorchUtilsLogic().uninstallTorch`` and ``.installTorch``
    (PyTorchUtils/PyTorchUtils.py of fepegar/SlicerPyTorch: ``installTorch(askConfirmation,
    forceComputationBackend, torchVersionRequirement, torchvisionVersionRequirement)``). torch is removed
    first, as pip would otherwise keep the installed build. Returns what ``install`` returns (the torch
    module), after a restart of Slicer the new build is loaded.
    """
    backend = (backend or AUTOMATIC).strip()
    if backend != AUTOMATIC and not (backend == "cpu" or backend.startswith(("cu", "rocm"))):
        raise ValueError(f"unknown PyTorch backend {backend!r}; e.g. automatic, cpu, cu121, rocm6.2")
    torch_spec = next(r.specifier for r in dependencies.REQUIREMENTS if r.name == "torch")
    vision_spec = next(r.specifier for r in dependencies.REQUIREMENTS if r.name == "torchvision")
    with dependencies.one_install_at_a_time():
        uninstall()
        return install(False, None if backend == AUTOMATIC else backend, torch_spec, vision_spec)


def reinstall_question(backend: str) -> str:
    """The confirmation asked before :func:`reinstall_torch`.

    Examples
    --------
    >>> reinstall_question("cpu").split("?")[0]
    "Reinstall PyTorch for the backend 'cpu' through the PyTorch extension"
    """
    return (
        f"Reinstall PyTorch for the backend '{backend or AUTOMATIC}' through the PyTorch extension? "
        "It removes torch and torchvision first; Slicer must be restarted afterwards."
    )


# ------------------------------------------------------------------------------------------- estimates
@dataclass
class Rates:
    """Measured seconds per image on this computer: deep features (one forward pass) and radiomics."""

    deep: float
    radiomics: float
    backbone: str = ""
    input_size: int = 0


@dataclass
class Estimate:
    """How long a run should take on the CPU, by part (seconds)."""

    cases: int
    deep: float
    radiomics: float

    @property
    def total(self) -> float:
        return self.deep + self.radiomics

    def text(self) -> str:
        return (
            f"{self.cases} cases on the CPU: about {_duration(self.total)} "
            f"(deep features {_duration(self.deep)}, radiomics {_duration(self.radiomics)})"
        )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def estimate_run_time(cases: int, rates: Rates, processes: int = 1, efficiency: float = 0.9) -> Estimate:
    """The CPU time of a run over ``cases`` images from measured per-image ``rates``.

    Deep features run in one process whose forward pass already uses every core (so the measured rate
    holds); radiomics runs in ``processes`` worker processes at ``efficiency`` of a linear speed-up (0.93
    was measured on 2 cores, BENCHMARKS.md). Classification and the report take seconds and are left out.

    Examples
    --------
    >>> estimate_run_time(780, Rates(deep=0.25, radiomics=0.05), processes=2).text()
    '780 cases on the CPU: about 4 min (deep features 3 min, radiomics 21 s)'
    """
    if cases < 0:
        raise ValueError(f"a cohort cannot have {cases} cases")
    workers = max(1, int(processes))
    radiomics = cases * rates.radiomics / (1 + (workers - 1) * efficiency)
    return Estimate(cases, cases * rates.deep, radiomics)


def measure_rates(backbone: str = "resnet50", input_size: int | None = None, repeats: int = 2) -> Rates:
    """Time one image through ``backbone`` (random weights, nothing downloaded, CPU) and the paper's
    radiomics on a small image, on this computer. Takes a few seconds (the model is built once). The image
    is ``input_size`` pixels a side (224 by default); for a native 3D network, one grey cube of that many
    voxels a side (the network's default cube by default), as a case goes through it."""
    import torch

    from Rad4XCNNLib.radiomics_check import compute_reference_features
    from Rad4XCNNLogic.features.backbones import build_backbone
    from Rad4XCNNLogic.features.volume_nets import CUBE_SIZE, is_volume_net

    model = build_backbone(backbone, weights=None).model.eval()
    if is_volume_net(backbone):
        input_size = input_size or CUBE_SIZE
        batch = torch.zeros(1, 1, input_size, input_size, input_size)
    else:
        input_size = input_size or 224
        batch = torch.zeros(1, 3, input_size, input_size)
    with torch.inference_mode():
        model(batch)  # the first pass allocates; it is not timed
        start = time.perf_counter()
        for _ in range(repeats):
            model(batch)
    deep = (time.perf_counter() - start) / repeats
    start = time.perf_counter()
    compute_reference_features()
    radiomics = time.perf_counter() - start
    return Rates(deep, radiomics, backbone, input_size)


def count_cases(manifest: str | Path) -> int:
    """The number of cases (data rows) of a cohort manifest, without reading any image."""
    path = Path(manifest)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = csv.reader(handle)
        next(rows, None)
        return sum(1 for row in rows if any(cell.strip() for cell in row))


# ----------------------------------------------------------------------------------- the child process
def run_in_child(*args: str, **kwargs) -> dict:
    """Run ``python -m Rad4XCNNLib.device ARGS`` in a child process (:func:`background.run_helper`)."""
    return background.run_helper("Rad4XCNNLib.device", *args, **kwargs)


def torch_report_in_child(requested: str = "auto", **kwargs) -> TorchReport:
    """:func:`torch_report`, computed in a child process (torch is never imported here)."""
    return TorchReport.from_dict(run_in_child("report", requested or "auto", **kwargs))


def measure_rates_in_child(backbone: str = "resnet50", **kwargs) -> Rates:
    """:func:`measure_rates`, measured in a child process (torch is never imported here)."""
    return Rates(**run_in_child("rates", backbone or "resnet50", **kwargs))


def cpu_estimate(
    values: Mapping, cases: int | None = None, rates: Rates | None = None, cpu_only: bool = True, **child
) -> tuple[Estimate | None, Rates | None]:
    """The estimate of a run with the settings ``values`` on ``cases`` cases (None: the manifest's), and the
    rates it used (measured in a child process unless ``rates`` are of the same backbone). The estimate is
    None when ``cpu_only`` and the run will use a GPU. ``child`` goes to :func:`run_in_child`."""
    if cpu_only and torch_report_in_child(values.get("Device") or "auto", **child).device != "cpu":
        return None, rates
    backbone = values.get("Backbone") or "resnet50"
    if rates is None or rates.backbone != backbone:
        rates = measure_rates_in_child(backbone, **child)
    cases = count_cases(values.get("ManifestPath") or "") if cases is None else cases
    return estimate_run_time(cases, rates, processes=os.cpu_count() or 1), rates


def main(argv: list[str] | None = None) -> None:
    """``python -m Rad4XCNNLib.device report DEVICE`` or ``rates BACKBONE``: one answer line of JSON."""
    parser = argparse.ArgumentParser(prog="python -m Rad4XCNNLib.device")
    parser.add_argument("what", choices=("report", "rates"))
    parser.add_argument("value")
    args = parser.parse_args(argv)
    answer = torch_report(args.value) if args.what == "report" else measure_rates(args.value)
    background.print_answer(asdict(answer))


if __name__ == "__main__":
    main()
