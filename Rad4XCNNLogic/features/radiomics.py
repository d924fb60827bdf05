"""Radiomic features of a cohort with PyRadiomics: presets, parallel and cached extraction, Dask, outputs.

Each lesion case goes to PyRadiomics as a true 2D SimpleITK image (or a 3D volume) in its pixel spacing
(integer grey values stay integers, others become float64) with its 0/1 mask; results are cached on disk
by content, cases run in worker processes or on a Dask cluster, and bad cases become
:class:`~Rad4XCNNLogic.errors.CaseFailure` records. (``import radiomics`` here is PyRadiomics: the engine's
imports are absolute, so this module's name shadows nothing.)

The per-case extraction, the three runners (serial, worker processes, Dask) and the assembly of their
results stay in this module: they share the worker-side state (PyRadiomics' logging, thread limits, the
cached extractor) that a worker process preloads as this one module. The parameters are in
:mod:`~Rad4XCNNLogic.features.radiomics_params`, the result and its files in
:mod:`~Rad4XCNNLogic.features.radiomics_result`.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import multiprocessing
import os
import threading
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from Rad4XCNNLogic.cohort.manifest import Case, Cohort
from Rad4XCNNLogic.errors import CaseError, CaseFailure, Rad4XCNNError, first_line
from Rad4XCNNLogic.features.radiomics_params import RadiomicsParams, for_volumes, resolve_params
from Rad4XCNNLogic.features.radiomics_result import RadiomicsResult
from Rad4XCNNLogic.infra.environment import available_cpus
from Rad4XCNNLogic.infra.storage import (
    ResultCache,
    file_sha256,
)

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

STAGE = "radiomics"
#: Built-in presets: name -> parameter file shipped in ``Rad4XCNNLogic/data``.
#: Number of features the ``paper`` preset gives on a 2D case (shape2D 9 + 5 images x 93).
PAPER_FEATURE_COUNT = 474
#: Namespace of the radiomics entries in a :class:`~Rad4XCNNLogic.infra.storage.ResultCache`.
CACHE_NAMESPACE = "radiomics"
#: How long to try to reach a Dask scheduler before giving up.
DASK_CONNECT_TIMEOUT = "20s"
# Bump when the cached document or the way an image is prepared for PyRadiomics changes.
_CACHE_FORMAT = 1
_THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS",
)
# PyRadiomics logs these on every case or every worker although they describe a deliberate choice (our
# presets use a fixed bin count, see radiomics_paper.yaml) or a documented identity, not the data.
_NOISE = {
    "radiomics.glcm": ("GLCM is symmetrical, therefore Sum Average",),
    "radiomics.featureextractor": ("Fixed bin Count enabled!",),
}


@contextlib.contextmanager
def _ignore_warnings(category: type[Warning]) -> Iterator[None]:
    """Hide warnings of ``category`` from the libraries we call, in the main thread only.

    ``warnings.catch_warnings`` changes process-wide state and is not thread-safe; in the threads of a
    Dask worker the warnings are left alone (Python shows each once per location).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category)
        yield


def _make_extractor(params: RadiomicsParams):
    """A PyRadiomics extractor for ``params``; a setting PyRadiomics rejects becomes a one-line error."""
    from radiomics import featureextractor

    _quiet_pyradiomics()
    try:
        # pykwalify, which checks the schema, loads PyRadiomics' schema functions with a deprecated call
        with _ignore_warnings(DeprecationWarning):
            return featureextractor.RadiomicsFeatureExtractor(params.pyradiomics_config())
    except Exception as exc:  # pykwalify's SchemaError, ValueError, KeyError ...
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise Rad4XCNNError(
            f"radiomics parameter file {params.name} is not valid for PyRadiomics: {first}"
        ) from None


def _check_params(params: RadiomicsParams, dims: int = 2) -> None:
    """Warn about settings that make no sense for the 2D images (or 3D volumes) given to PyRadiomics."""
    setting = params.setting
    if dims == 3:
        return  # for_volumes refused the 2D settings
    if setting.get("force2D"):
        log.warning(
            "radiomics parameters %s set force2D: true; images are already 2D, and force2D on a 2D image "
            "makes the wavelet filter decompose along one axis only (sub-bands L/H instead of LL/LH/HL/HH)",
            params.name,
        )
    if setting.get("label", 1) != 1:
        log.info(
            "radiomics parameters %s: label %s ignored, masks are binarised to 0/1",
            params.name,
            setting["label"],
        )
    if "shape" in (params.config.get("featureClass") or {}):
        log.warning("radiomics parameters %s enable 'shape' (3D); 2D images need 'shape2D'", params.name)


# ---------------------------------------------------------------------------------------- PyRadiomics
class _DropNoise(logging.Filter):
    def __init__(self, texts: Sequence[str]):
        super().__init__()
        self.texts = tuple(texts)

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.texts)


_PREPARED: dict[str, bool] = {}
_LOCAL = threading.local()
_BUILD_LOCK = threading.Lock()


def _quiet_pyradiomics(level: int = logging.WARNING) -> None:
    """Set PyRadiomics' own logger (not the root logger) to ``level`` and drop its per-case noise."""
    import radiomics

    radiomics.setVerbosity(level)
    radiomics.logger.setLevel(level)
    logging.getLogger("pykwalify").setLevel(max(level, logging.WARNING))  # its schema check logs at INFO
    for name, texts in _NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise(texts))


def _limit_threads() -> None:
    """One thread per worker for SimpleITK and BLAS, so that N workers use N cores, not N x N."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(1)


def init_worker() -> None:
    """Initialiser of each worker process."""
    for name in _THREAD_VARIABLES:
        os.environ[name] = "1"
    prepare_process(limit_threads=True)


def prepare_process(limit_threads: bool) -> None:
    """Quiet PyRadiomics once per process and, in a worker, limit its threads once."""
    if not _PREPARED.get("quiet"):
        _quiet_pyradiomics()
        _PREPARED["quiet"] = True
    if limit_threads and not _PREPARED.get("threads"):
        _limit_threads()
        _PREPARED["threads"] = True


def _extractor_for(params: RadiomicsParams):
    """The extractor of this thread for ``params`` (built once; extractors are not shared by threads).

    Building one is serialised: PyRadiomics' schema check (pykwalify) is not thread-safe, and two Dask
    worker threads building at once fail with YAML parser errors.
    """
    cache = getattr(_LOCAL, "extractors", None)
    if cache is None:
        cache = _LOCAL.extractors = {}
    if params.sha256 not in cache:
        with _BUILD_LOCK:
            cache[params.sha256] = _make_extractor(params)
    return cache[params.sha256]


# ------------------------------------------------------------------------------------------ per case
@dataclass
class _Outcome:
    """What one case gave: features and diagnostics, or the problem that stopped it."""

    case_id: str
    features: dict[str, float] | None = None
    diagnostics: dict[str, Any] | None = None
    problem: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.problem is None


def _plain(value: Any) -> Any:
    """A diagnostics value as a JSON-friendly scalar (PyRadiomics gives numpy scalars, tuples, dicts)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(str(_plain(v)) for v in value) + ")"
    return str(value)


def _to_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _extract_case(extractor, case: Case) -> _Outcome:
    """Load one case and run PyRadiomics on it; every problem becomes the outcome's ``problem``."""
    start = time.perf_counter()
    try:
        loaded = case.load()
    except CaseError as exc:
        return _Outcome(case.case_id, problem=exc.problem, seconds=time.perf_counter() - start)
    if not loaded.mask.any():
        problem = "mask is empty (no lesion pixel): no radiomic features"
        return _Outcome(case.case_id, problem=problem, seconds=time.perf_counter() - start)
    image = loaded.image.to_sitk(pixels_for_pyradiomics(loaded.image.array))
    mask = loaded.image.to_sitk(loaded.mask.astype(np.uint8))
    try:
        # empty texture matrices (e.g. no two neighbouring lesion pixels) give NaN, reported per feature
        with _ignore_warnings(RuntimeWarning):
            result = extractor.execute(image, mask, label=1)
    except ValueError as exc:  # PyRadiomics' checks of the mask (too small, a line, ...) raise ValueError
        problem = f"PyRadiomics refused the case: {first_line(exc)}"
        return _Outcome(case.case_id, problem=problem, seconds=time.perf_counter() - start)
    except Exception as exc:
        problem = f"PyRadiomics failed: {type(exc).__name__}: {first_line(exc)}"
        return _Outcome(case.case_id, problem=problem, seconds=time.perf_counter() - start)
    features: dict[str, float] = {}
    diagnostics: dict[str, Any] = {}
    for name, value in result.items():
        if name.startswith("diagnostics_"):
            short = name[len("diagnostics_") :]
            if not short.startswith("Configuration_"):  # the parameters: recorded once, in the settings
                diagnostics[short] = _plain(value)
        else:
            features[name] = _to_float(value)
    return _Outcome(case.case_id, features, diagnostics, seconds=time.perf_counter() - start)


def pixels_for_pyradiomics(array: np.ndarray) -> np.ndarray:
    """The grey values in the type PyRadiomics should see: the smallest exact integer type, or float64.

    Integer images (8-bit PNG, 16-bit DICOM) go in as integers, as when PyRadiomics reads the file itself:
    the features are identical to float64's and the image hashes and crops are cheaper. Other images go
    in as float64, never float32: PyWavelets keeps float32 input in float32, which shifts wavelet
    features by about 1e-5 (relative).
    """
    values = np.asarray(array)
    if values.size and np.array_equal(values, np.rint(values)):
        lo, hi = float(values.min()), float(values.max())
        for kind in (np.uint8, np.int16, np.uint16, np.int32):
            info = np.iinfo(kind)
            if info.min <= lo and hi <= info.max:
                return values.astype(kind)
    return values.astype(np.float64)


def _extract_chunk(
    cases: Sequence[Case], params: RadiomicsParams, caller_pid: int | None = None
) -> list[_Outcome]:
    """Extract a few cases in a worker (a process of our pool or a Dask worker).

    Threads are limited to one only in a process other than the caller's: an in-process Dask cluster
    runs tasks in the caller's process, whose settings are not ours to change.
    """
    prepare_process(limit_threads=caller_pid is not None and os.getpid() != caller_pid)
    extractor = _extractor_for(params)
    return [_extract_case(extractor, case) for case in cases]


# ------------------------------------------------------------------------------------------ helpers
def library_versions() -> dict[str, str]:
    """Versions of the libraries that determine the feature values."""
    try:
        import pywt
        import radiomics
    except ImportError as exc:
        raise Rad4XCNNError(
            f"radiomics needs PyRadiomics and PyWavelets ({exc.name} is missing): "
            "pip install 'rad4xcnn[radiomics]'"
        ) from None
    import SimpleITK as sitk

    return {
        "pyradiomics": str(radiomics.__version__).lstrip("v"),
        "SimpleITK": sitk.Version_VersionString(),
        "PyWavelets": pywt.__version__,
        "numpy": np.__version__,
    }


def _chunks(items: Sequence, size: int) -> list[list]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _auto_chunk_size(n: int, workers: int) -> int:
    # Small chunks keep the progress bar smooth and the load balanced; a few cases per task amortise the
    # per-task cost (pickling, scheduling) where cases are many.
    return max(1, min(4, n // (workers * 16)))


def _union_columns(dicts: Iterable[dict]) -> list[str]:
    seen: dict[str, None] = {}
    for d in dicts:
        for k in d:
            seen.setdefault(k, None)
    return list(seen)


def _cache_key(cache: ResultCache, image_hash: str, mask_hashes: Sequence[str], params, versions) -> str:
    return cache.key(_CACHE_FORMAT, image_hash, sorted(mask_hashes), params.sha256, versions)


# -------------------------------------------------------------------------------------------- runners
def _run_serial(todo: list[Case], params: RadiomicsParams) -> Iterator[_Outcome]:
    extractor = _extractor_for(params)
    prepare_process(limit_threads=False)
    for case in todo:
        yield _extract_case(extractor, case)


def _run_processes(
    todo: list[Case], params: RadiomicsParams, jobs: int, chunk_size: int
) -> Iterator[_Outcome]:
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    chunks = _chunks(todo, chunk_size)
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=worker_context(), initializer=init_worker)
    pending: dict = {}
    lost: list[Case] = []
    queue = iter(chunks)

    def submit(chunk: list[Case]) -> None:
        try:
            pending[pool.submit(_extract_chunk, chunk, params, os.getpid())] = chunk
        except BrokenProcessPool:
            lost.extend(chunk)

    finished = False
    try:
        # at most two chunks per worker in flight: outcomes stream back while the rest waits here
        for chunk in itertools.islice(queue, 2 * jobs):
            submit(chunk)
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                chunk = pending.pop(future)
                try:
                    outcomes = future.result()
                except BrokenProcessPool:
                    outcomes = [_Outcome(c.case_id, problem=_DIED) for c in chunk]
                yield from outcomes
                nxt = next(queue, None)
                if nxt is not None:
                    submit(nxt)
        lost.extend(case for chunk in queue for case in chunk)  # left when the pool broke
        yield from (_Outcome(c.case_id, problem=_DIED) for c in lost)
        finished = True
    finally:
        pool.shutdown(wait=finished, cancel_futures=True)


#: Modules the fork server imports once, so that every worker forked from it starts with them loaded.
_PRELOAD = ("Rad4XCNNLogic.features.radiomics", "radiomics.featureextractor")


def worker_context():
    """forkserver (Linux) or spawn, never fork: the caller may hold threads (torch, Slicer) that fork
    would copy half-locked into the children.

    With forkserver, PyRadiomics is imported once in the server instead of once per worker, so a pool
    starts in milliseconds. The preload list only counts before the server first starts; modules that
    someone else asked for are kept.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    from multiprocessing import forkserver

    current = list(getattr(getattr(forkserver, "_forkserver", None), "_preload_modules", ["__main__"]))
    context.set_forkserver_preload(current + [m for m in _PRELOAD if m not in current])
    return context


_DIED = (
    "a worker process died (out of memory, a crash, or a script calling this without the "
    "`if __name__ == '__main__':` guard); rerun with one job to find the case"
)


def _connect(scheduler: Any):
    try:
        from distributed import Client
    except ImportError:
        raise Rad4XCNNError(
            "distributed radiomics needs Dask: pip install 'rad4xcnn[dask]' (dask[distributed])"
        ) from None
    if isinstance(scheduler, Client):
        return scheduler, False
    address = str(scheduler)
    try:
        client = Client(address, timeout=DASK_CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise Rad4XCNNError(f"cannot reach the Dask scheduler at {address}: {first_line(exc)}") from None
    return client, True


def _run_dask(
    todo: list[Case], params: RadiomicsParams, scheduler: Any, chunk_size: int | None
) -> Iterator[_Outcome]:
    from distributed import as_completed

    client, owned = _connect(scheduler)
    try:
        threads = max(1, sum(client.nthreads().values()))
        size = chunk_size or _auto_chunk_size(len(todo), threads)
        chunks = _chunks(todo, size)
        futures = {
            client.submit(
                _extract_chunk,
                chunk,
                params,
                os.getpid(),
                pure=False,
                key=f"rad4xcnn-radiomics-{uuid.uuid4().hex}",
            ): chunk
            for chunk in chunks
        }
        try:
            for future in as_completed(list(futures), loop=client.loop):
                chunk = futures[future]
                try:
                    outcomes = future.result()
                except Exception as exc:  # KilledWorker, a lost connection, ...
                    problem = f"the Dask task failed: {type(exc).__name__}: {first_line(exc)}"
                    outcomes = [_Outcome(c.case_id, problem=problem) for c in chunk]
                yield from outcomes
        finally:
            client.cancel(list(futures))
    finally:
        if owned:
            client.close()


# --------------------------------------------------------------------------------------------- public
def extract_radiomics(
    cohort: Cohort | Sequence[Case],
    params: str | os.PathLike | RadiomicsParams,
    *,
    jobs: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    scheduler: Any = None,
    progress: bool = True,
    lesion_only: bool = True,
    chunk_size: int | None = None,
) -> RadiomicsResult:
    """Compute radiomic features for every lesion case of a cohort.

    Parameters
    ----------
    cohort : a :class:`~Rad4XCNNLogic.cohort.manifest.Cohort` (or a list of cases).
    params : ``"paper"`` (474 features: shape2D, original and 4 wavelet sub-bands), ``"extended"`` (adds
        LoG and other filters) or the path of a PyRadiomics YAML file, used as it is (``label`` is 1).
    jobs : worker processes (default: every core this process may use); 1 runs in this process.
    cache_dir : folder of the on-disk cache; a case whose image, mask, parameters and library versions
        are unchanged is read from it instead of being computed. None: no cache.
    scheduler : the address of a Dask scheduler (``"tcp://host:8786"``) or a ``distributed.Client``: the
        cases then run on that cluster (``jobs`` is ignored). Its workers must see the same file paths.
    progress : show a progress bar (stderr) or progress events (see :mod:`Rad4XCNNLogic.infra.progress`).
    lesion_only : leave out cases with ``has_lesion=false`` (their masks are empty).
    chunk_size : cases per task (default: automatic, 1 to 4).

    Returns
    -------
    RadiomicsResult
        features, diagnostics, failures, settings, per-feature quality and cache counts.

    Raises
    ------
    Rad4XCNNError
        for unusable parameters (unknown preset, bad YAML, a setting PyRadiomics rejects) or an
        unreachable Dask scheduler. Bad cases do not raise: they are in ``result.failures``.

    Examples
    --------
    >>> cohort = read_manifest("manifest.csv")  # doctest: +SKIP
    >>> result = extract_radiomics(cohort, "paper", cache_dir="cache")  # doctest: +SKIP
    >>> result.features.shape, len(result.failures)  # doctest: +SKIP
    ((437, 474), 0)
    """
    from Rad4XCNNLogic.infra.progress import track

    started = time.perf_counter()
    params = resolve_params(params)
    all_cases = list(cohort.cases if isinstance(cohort, Cohort) else cohort)
    dims = cohort_dims(all_cases)
    if dims == 3:
        chosen = params.name
        params = for_volumes(params)
        if params.name != chosen:
            log.info("radiomics: 3D volumes, preset %s used for %s", params.name, chosen)
    _check_params(params, dims)
    spacing = params.setting.get("resampledPixelSpacing")
    if spacing is not None and len(spacing) != dims:
        raise Rad4XCNNError(
            f"resample spacing {list(spacing)} has {len(spacing)} values but the cohort holds {dims}D "
            f"{'volumes' if dims == 3 else 'images'}; give {dims}"
        )
    versions = library_versions()
    if jobs is not None and jobs < 1:
        raise Rad4XCNNError(f"jobs must be at least 1, got {jobs}")
    if chunk_size is not None and chunk_size < 1:
        raise Rad4XCNNError(f"chunk_size must be at least 1, got {chunk_size}")
    cases = [c for c in all_cases if c.has_lesion or not lesion_only]
    if lesion_only and len(cases) < len(all_cases):
        log.info("radiomics: %d case(s) without a lesion left out", len(all_cases) - len(cases))
    cache = ResultCache(cache_dir, CACHE_NAMESPACE) if cache_dir is not None else None

    outcomes: dict[str, _Outcome] = {}
    hashes: dict[str, tuple[str, list[str]]] = {}
    keys: dict[str, str] = {}
    cached: list[_Outcome] = []
    todo: list[Case] = []
    for case in cases:
        try:
            hashes[case.case_id] = (file_sha256(case.image), [file_sha256(m) for m in case.masks])
        except OSError as exc:
            problem = f"cannot read {exc.filename or 'its files'}: {exc.strerror or exc}"
            outcomes[case.case_id] = _Outcome(case.case_id, problem=problem)
            continue
        if cache is not None:
            key = keys[case.case_id] = _cache_key(cache, *hashes[case.case_id], params, versions)
            document = cache.get_json(key)
            if _valid_document(document):
                cached.append(
                    _Outcome(
                        case.case_id, document["features"], document["diagnostics"], None, document["seconds"]
                    )
                )
                continue
        todo.append(case)

    if todo:
        _extractor_for(params)  # checks the settings before any work is sent out (cached: they were fine)
    jobs = available_cpus() if jobs is None else jobs
    computed: Iterator[_Outcome]
    if not todo:
        computed, mode = iter(()), "nothing"
    elif scheduler is not None:
        computed, mode = _run_dask(todo, params, scheduler, chunk_size), "dask"
    else:
        size = chunk_size or _auto_chunk_size(len(todo), jobs)
        workers = min(jobs, math.ceil(len(todo) / size))
        if workers <= 1:
            computed, mode = _run_serial(todo, params), "serial"
        else:
            computed, mode = _run_processes(todo, params, workers, size), f"{workers} processes"
    log.info(
        "radiomics (%s): %d case(s), %d from the cache, %d to compute (%s)",
        params.name,
        len(cases),
        len(cached),
        len(todo),
        mode,
    )

    def stream() -> Iterator[_Outcome]:
        yield from cached
        for outcome in computed:
            if outcome.ok:
                image_hash, mask_hashes = hashes[outcome.case_id]
                outcome.diagnostics = {
                    "image_sha256": image_hash,
                    "mask_sha256": ";".join(mask_hashes),
                    "extraction_seconds": round(outcome.seconds, 4),
                    **(outcome.diagnostics or {}),
                }
                if cache is not None:  # stored as soon as it arrives: an interrupted run loses nothing done
                    cache.put_json(keys[outcome.case_id], _document(outcome))
            yield outcome

    total = len(cached) + len(todo)
    for outcome in track(stream(), total=total, desc="radiomics", stage=STAGE, enabled=progress):
        outcomes[outcome.case_id] = outcome
    result = _assemble(
        cases, outcomes, params, versions, lesion_only, len(cached), len(todo), time.perf_counter() - started
    )
    if dims == 3:
        result.settings.update(dims=3, image_preparation=_VOLUME_PREPARATION)
    return result


_VOLUME_PREPARATION = (
    "3D SimpleITK volume in the file's voxel spacing, origin and direction; grey values as the smallest "
    "exact integer type or float64; mask 0/1 on the same grid, label 1"
)


def cohort_dims(cases: Sequence[Case]) -> int:
    """3 when the cases are volumes (from the manifest's header reading, else the first image's header)."""
    from Rad4XCNNLogic.cohort.volumes import image_info

    known = {c.dims for c in cases if c.dims is not None}
    if known:
        return max(known)
    info = image_info(cases[0].image) if cases and cases[0].image.exists() else None
    return info[0] if info else 2


def _document(outcome: _Outcome) -> dict:
    return {
        "format": _CACHE_FORMAT,
        "features": outcome.features,
        "diagnostics": outcome.diagnostics,
        "seconds": outcome.seconds,
    }


def _valid_document(document: Any) -> bool:
    return (
        isinstance(document, dict)
        and document.get("format") == _CACHE_FORMAT
        and isinstance(document.get("features"), dict)
        and isinstance(document.get("diagnostics"), dict)
    )


def _assemble(
    cases: Sequence[Case],
    outcomes: dict[str, _Outcome],
    params: RadiomicsParams,
    versions: dict[str, str],
    lesion_only: bool,
    hits: int,
    misses: int,
    seconds: float,
) -> RadiomicsResult:
    """Tables in the cohort's order, failures, and the per-feature quality checks."""
    import pandas as pd

    good = [outcomes[c.case_id] for c in cases if c.case_id in outcomes and outcomes[c.case_id].ok]
    failures = [
        CaseFailure(c.case_id, STAGE, outcomes[c.case_id].problem or "")
        for c in cases
        if c.case_id in outcomes and not outcomes[c.case_id].ok
    ]
    for failure in failures:
        log.warning("%s", failure)
    index = pd.Index([o.case_id for o in good], name="case_id", dtype=object)
    columns = _union_columns(o.features or {} for o in good)
    matrix = np.array(
        [[(o.features or {}).get(c, math.nan) for c in columns] for o in good], dtype=np.float64
    ).reshape(len(good), len(columns))
    features = pd.DataFrame(matrix, index=index, columns=columns)
    diag_columns = _union_columns(o.diagnostics or {} for o in good)
    diagnostics = pd.DataFrame(
        [[(o.diagnostics or {}).get(c) for c in diag_columns] for o in good],
        index=index,
        columns=diag_columns,
    )
    values = features.to_numpy()
    bad = ~np.isfinite(values)
    nonfinite = pd.Series(
        bad.sum(axis=0), index=pd.Index(columns, name="feature"), name="nonfinite", dtype=int
    )
    nonfinite = nonfinite[nonfinite > 0]
    for row, outcome in zip(bad, good, strict=True):
        if row.any():
            names = [c for c, b in zip(columns, row, strict=True) if b]
            log.warning(
                "case %s: %d of %d radiomic features are NaN or infinite (e.g. %s)",
                outcome.case_id,
                len(names),
                len(columns),
                ", ".join(names[:3]),
            )
    constant = _constant_features(features)
    if constant:
        log.info(
            "%d radiomic feature(s) are constant across the %d cases and cannot be correlated (e.g. %s)",
            len(constant),
            len(features),
            ", ".join(constant[:3]),
        )
    settings = {
        "params": params.name,
        "params_file": str(params.path),
        "params_sha256": params.sha256,
        "params_yaml": params.text,
        "setting": params.setting,
        "image_types": list((params.config.get("imageType") or {}).keys()),
        "feature_classes": list((params.config.get("featureClass") or {}).keys()),
        "pyradiomics": versions["pyradiomics"],
        "versions": versions,
        "lesion_only": lesion_only,
        "image_preparation": "2D SimpleITK image in the file's pixel spacing; grey values as the smallest "
        "exact integer type (8-bit PNG: uint8) or float64; mask 0/1, label 1",
        "n_features": len(columns),
    }
    return RadiomicsResult(
        features=features,
        diagnostics=diagnostics,
        failures=failures,
        settings=settings,
        nonfinite=nonfinite,
        constant=constant,
        cache_hits=hits,
        cache_misses=misses,
        seconds=seconds,
        case_ids=[c.case_id for c in cases],
    )


def _constant_features(features: pd.DataFrame) -> list[str]:
    """Features with fewer than two distinct finite values (up to rounding) over the cases."""
    if len(features) < 2:
        return []
    values = features.to_numpy(dtype=np.float64)
    finite = np.isfinite(values)
    lo = np.where(finite, values, np.inf).min(axis=0)
    hi = np.where(finite, values, -np.inf).max(axis=0)
    with np.errstate(invalid="ignore"):
        spread = hi - lo  # -inf where a feature has no finite value
        scale = np.maximum(1.0, np.maximum(np.abs(lo), np.abs(hi)))
        flat = (finite.sum(axis=0) < 2) | ~(spread > 1e-12 * scale)
    return [name for name, is_flat in zip(features.columns, flat, strict=True) if is_flat]
