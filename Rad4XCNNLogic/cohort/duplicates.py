"""Duplicate and near-duplicate images in a cohort: an exact content hash of the pixels and a perceptual hash
(the DCT pHash of the grey image), and the pairs of cases whose images match across splits - a case that
is, in effect, both trained on and held out.

The pHash is written here with numpy and scipy (no image-hashing dependency): a 32x32 area-averaged grey
thumbnail, its 2D DCT, and one bit per low-frequency coefficient (the 8x8 block) above their median.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from Rad4XCNNLogic.cohort.manifest import Case
from Rad4XCNNLogic.cohort.settings import DEFAULT_DUPLICATE_DISTANCE
from Rad4XCNNLogic.errors import CaseError, CaseFailure

log = logging.getLogger(__name__)

#: Hamming distance up to which two images are near-duplicates (setting ``split.duplicate_distance``).
DEFAULT_MAX_DISTANCE = DEFAULT_DUPLICATE_DISTANCE
_THUMB = 32
_LOW = 8


def _grey(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, dtype=float)
    if array.ndim == 3:
        array = array[..., :3].mean(axis=-1)
    if array.ndim != 2:
        raise ValueError(f"expected a 2D grey or RGB image, got shape {array.shape}")
    return array


def _thumbnail(grey: np.ndarray, size: int = _THUMB) -> np.ndarray:
    """``size`` x ``size`` area average (each output pixel the mean of its block of input pixels)."""
    h, w = grey.shape
    if h < size or w < size:
        from scipy.ndimage import zoom

        grey = zoom(grey, (max(1.0, size / h), max(1.0, size / w)), order=1)
        h, w = grey.shape
    rows = np.linspace(0, h, size + 1).astype(int)[:-1]
    cols = np.linspace(0, w, size + 1).astype(int)[:-1]
    sums = np.add.reduceat(np.add.reduceat(grey, rows, axis=0), cols, axis=1)
    counts = np.outer(np.diff(np.r_[rows, h]), np.diff(np.r_[cols, w]))
    return sums / counts


def perceptual_hash(array: np.ndarray) -> int:
    """The 64-bit DCT perceptual hash (pHash) of a grey or RGB image, as an integer.

    Examples
    --------
    >>> rng = np.random.default_rng(0); img = rng.random((64, 64))
    >>> perceptual_hash(img) == perceptual_hash(img * 2 + 10)  # brightness and contrast do not change it
    True
    """
    from scipy.fft import dctn

    coefficients = dctn(_thumbnail(_grey(array)), norm="ortho")[:_LOW, :_LOW].ravel()
    bits = coefficients > np.median(coefficients[1:])  # the DC term would dominate the median
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def content_hash(array: np.ndarray) -> str:
    """SHA-256 of an image's pixels with their shape and type: equal for the same pixels in any file format.

    Examples
    --------
    >>> content_hash(np.zeros((2, 2), np.uint8)) == content_hash(np.zeros((2, 2), np.uint8))
    True
    """
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.shape}{array.dtype.str}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def hamming_distance(a: int, b: int) -> int:
    """Number of differing bits of two hashes.

    Examples
    --------
    >>> hamming_distance(0b1011, 0b0010)
    2
    """
    return int(bin(int(a) ^ int(b)).count("1"))


@dataclass(frozen=True)
class ImageHashes:
    """The hashes of one case's image."""

    case_id: str
    phash: int
    sha256: str


def hash_cases(cases: Iterable[Case]) -> tuple[list[ImageHashes], list[CaseFailure]]:
    """Read every case's image and hash it; a case whose image cannot be read becomes a failure.

    Examples
    --------
    >>> hashes, failures = hash_cases(read_manifest("manifest.csv"))  # doctest: +SKIP
    """
    from Rad4XCNNLogic.cohort.imageio import read_image

    hashes, failures = [], []
    for case in cases:
        try:
            array = read_image(case.image, case.case_id).array
        except CaseError as exc:
            failures.append(CaseFailure(case.case_id, "duplicates", exc.problem))
            continue
        hashes.append(ImageHashes(case.case_id, perceptual_hash(array), content_hash(array)))
    return hashes, failures


@dataclass(frozen=True)
class DuplicatePair:
    """Two cases with (near-)identical images: their Hamming distance, exactness and places."""

    case_a: str
    case_b: str
    distance: int
    identical: bool
    place_a: str
    place_b: str

    @property
    def across_splits(self) -> bool:
        """Whether the two cases are in different (cohort, split) places."""
        return self.place_a != self.place_b

    def __str__(self) -> str:
        how = "identical pixels" if self.identical else f"pHash distance {self.distance}"
        return f"{self.case_a} ({self.place_a}) ~ {self.case_b} ({self.place_b}): {how}"


def _place(case: Case) -> str:
    return f"{case.cohort}/{case.split or 'unassigned'}"


def find_near_duplicates(
    cases: Iterable[Case],
    *,
    max_distance: int = DEFAULT_MAX_DISTANCE,
    hashes: Iterable[ImageHashes] | None = None,
    warn: bool = True,
) -> tuple[list[DuplicatePair], list[CaseFailure]]:
    """Pairs of cases whose images are identical or within ``max_distance`` pHash bits, closest first.

    Parameters
    ----------
    cases : the cases (their ``cohort`` and ``split`` give each pair's places).
    max_distance : the largest Hamming distance (of 64 bits) that counts as a near-duplicate.
    hashes : the hashes if already computed (:func:`hash_cases`); otherwise the images are read.
    warn : log the pairs across splits as a warning.

    Returns
    -------
    (pairs, failures): pairs ordered by distance then case id; failures are unreadable images.

    Examples
    --------
    >>> pairs, _ = find_near_duplicates(cohort.cases)  # doctest: +SKIP
    >>> [str(p) for p in pairs if p.across_splits]  # doctest: +SKIP
    ['benign_012 (internal/train) ~ benign_013 (internal/test): pHash distance 2']
    """
    cases = list(cases)
    by_id = {c.case_id: c for c in cases}
    failures: list[CaseFailure] = []
    if hashes is None:
        hashes, failures = hash_cases(cases)
    hashes = [h for h in hashes if h.case_id in by_id]
    if len(hashes) < 2:
        return [], failures
    values = np.array([h.phash for h in hashes], dtype=np.uint64)
    bits = np.unpackbits(values.view(np.uint8).reshape(-1, 8), axis=1).astype(np.uint8)
    pairs = []
    # rows in blocks, so that memory stays at block x n even for tens of thousands of images
    block = max(1, 2**22 // (64 * len(hashes)))
    for start in range(0, len(hashes), block):
        rows = bits[start : start + block]
        distance = (rows[:, None, :] != bits[None, :, :]).sum(axis=2)
        for i, j in zip(*np.nonzero(distance <= max_distance), strict=True):
            a = start + int(i)
            if int(j) <= a:
                continue
            ha, hb = hashes[a], hashes[int(j)]
            pairs.append(
                DuplicatePair(
                    ha.case_id,
                    hb.case_id,
                    int(distance[i, j]),
                    ha.sha256 == hb.sha256,
                    _place(by_id[ha.case_id]),
                    _place(by_id[hb.case_id]),
                )
            )
    pairs.sort(key=lambda p: (p.distance, p.case_a, p.case_b))
    across = [p for p in pairs if p.across_splits]
    if across and warn:
        log.warning(
            "%d near-duplicate image pair(s) across splits: %s",
            len(across),
            "; ".join(map(str, across[:10])) + (" ..." if len(across) > 10 else ""),
        )
    return pairs, failures


def format_duplicates(pairs: Iterable[DuplicatePair], limit: int = 50, *, every_pair: bool = False) -> str:
    """Lines for people: the near-duplicate pairs across splits (a warning), then how many within one;
    with ``every_pair``, every pair is listed (a cohort without splits yet: any pair may straddle one).

    Examples
    --------
    >>> print(format_duplicates([]))
    near-duplicate images: none
    """
    pairs = list(pairs)
    if not pairs:
        return "near-duplicate images: none"
    if every_pair:
        lines = [f"WARNING: {len(pairs)} near-duplicate image pair(s); a split may put them on two sides:"]
        lines += [f"  {p}" for p in pairs[:limit]]
        if len(pairs) > limit:
            lines.append(f"  ... and {len(pairs) - limit} more")
        return "\n".join(lines)
    across = [p for p in pairs if p.across_splits]
    within = len(pairs) - len(across)
    lines = []
    if across:
        lines.append(f"WARNING: {len(across)} near-duplicate image pair(s) across splits:")
        lines += [f"  {p}" for p in across[:limit]]
        if len(across) > limit:
            lines.append(f"  ... and {len(across) - limit} more")
    if within:
        lines.append(f"near-duplicate image pairs within one split: {within}")
    return "\n".join(lines)
