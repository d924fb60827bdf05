"""Fine-tuning a backbone on a cohort's lesion crops (``rad4xcnn train``).

Transfer learning on the ``train`` split with validation on ``val``: augmentation suited to ultrasound,
class-weighted cross-entropy, AdamW with warm-up and cosine decay, early stopping on the validation AUC, and
the best model saved as a checkpoint that carries its preprocessing (see
:mod:`Rad4XCNNLogic.features.backbones`).
The paper's two-phase protocol is two calls: train on one cohort, then ``weights=<first checkpoint>`` and
``train_cohort=<second cohort>``.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from Rad4XCNNLogic.cohort.manifest import Case, Cohort, LoadedCase
from Rad4XCNNLogic.cohort.roi import SquareCrop
from Rad4XCNNLogic.errors import CaseFailure, Rad4XCNNError
from Rad4XCNNLogic.features.backbones import Backbone, PreprocessConfig
from Rad4XCNNLogic.features.settings import DEEP, TrainingConfig
from Rad4XCNNLogic.features.volume_nets import check_images, is_volume_net
from Rad4XCNNLogic.infra.progress import ProgressBar
from Rad4XCNNLogic.infra.settings import check_section

log = logging.getLogger(__name__)

STAGE = "train"


# ------------------------------------------------------------------------------------------- augmentation
@dataclass(frozen=True)
class UltrasoundAugmentation:
    """Random changes that keep an ultrasound image plausible, applied to the lesion crop when training.

    * left-right flip (``hflip``: probability). No up-down flip: depth has a direction in ultrasound
      (posterior shadowing or enhancement lies below a lesion), and a flipped image is not a real one.
    * small affine: rotation up to ``rotate_deg``, zoom in ``scale``, shift up to ``shift`` of the crop. The
      crop is taken with ``context`` times its size first, so that the transformed view is filled with real
      image rather than with padding.
    * intensity: gamma in ``gamma`` (gain curve), contrast and brightness jitter.
    * speckle jitter: multiplicative noise of a random strength up to ``speckle``.

    Examples
    --------
    >>> aug = UltrasoundAugmentation(rotate_deg=5)
    >>> x = aug(case.load(), preprocess_config, np.random.default_rng(0))  # doctest: +SKIP
    """

    hflip: float = 0.5
    rotate_deg: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)
    shift: float = 0.05
    gamma: tuple[float, float] = (0.8, 1.25)
    contrast: float = 0.15
    brightness: float = 0.1
    speckle: float = 0.15
    context: float = 1.5

    def __call__(self, loaded: LoadedCase, config: PreprocessConfig, rng: np.random.Generator) -> np.ndarray:
        from scipy.ndimage import affine_transform

        from Rad4XCNNLogic.features.preprocessing import case_crop, scale_intensity

        crop = case_crop(loaded, config)
        n = int(config.input_size)
        big_side = math.ceil(crop.side * self.context)
        centre_r, centre_c = crop.top + crop.side / 2.0, crop.left + crop.side / 2.0
        big = SquareCrop(
            round(centre_r - big_side / 2.0), round(centre_c - big_side / 2.0), big_side, crop.image_shape
        )
        size_big = round(n * self.context)
        scaled = scale_intensity(loaded.image.array, config.intensity)
        patch = big.to_input(scaled, size_big, config.interpolation)
        # output pixel o maps to patch pixel A @ (o - c_out) + c_patch + t (scipy's pull convention)
        unit = (crop.side / n) * (size_big / big_side)
        angle = math.radians(rng.uniform(-self.rotate_deg, self.rotate_deg))
        zoom = rng.uniform(*self.scale)
        flip = -1.0 if rng.random() < self.hflip else 1.0
        rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        matrix = unit * zoom * rot @ np.diag([1.0, flip])
        shift = rng.uniform(-self.shift, self.shift, 2) * crop.side * size_big / big_side
        c_out, c_patch = (n - 1) / 2.0, (size_big - 1) / 2.0
        offset = np.array([c_patch, c_patch]) + shift - matrix @ np.array([c_out, c_out])
        x = affine_transform(patch, matrix, offset=offset, output_shape=(n, n), order=1, mode="constant")
        x = np.clip(x, 0.0, 1.0) ** np.exp(rng.uniform(math.log(self.gamma[0]), math.log(self.gamma[1])))
        mean = float(x.mean())
        x = (x - mean) * (1.0 + rng.uniform(-self.contrast, self.contrast)) + mean
        x = x + rng.uniform(-self.brightness, self.brightness)
        x = x * (1.0 + rng.uniform(0.0, self.speckle) * rng.standard_normal(x.shape))
        return np.clip(x, 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------- metrics
def roc_auc(y_true: Sequence[int], proba: np.ndarray) -> float:
    """Area under the ROC curve: binary (score = probability of class 1) or macro one-vs-rest.

    Written here (Mann-Whitney U on ranks, ties averaged) so that training needs no scikit-learn;
    it equals ``sklearn.metrics.roc_auc_score(y, p, multi_class="ovr", average="macro")``. NaN when no
    class has both positives and negatives.

    Examples
    --------
    >>> roc_auc([0, 0, 1, 1], np.array([[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]]))
    0.75
    """
    from scipy.stats import rankdata

    y = np.asarray(y_true, dtype=int)
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim == 1:
        proba = np.stack([1.0 - proba, proba], axis=1)
    classes = [1] if proba.shape[1] == 2 else range(proba.shape[1])
    aucs = []
    for c in classes:
        positive = y == c
        n_pos, n_neg = int(positive.sum()), int((~positive).sum())
        if n_pos == 0 or n_neg == 0:
            continue
        ranks = rankdata(proba[:, c])
        aucs.append((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
    return float(np.mean(aucs)) if aucs else float("nan")


# ---------------------------------------------------------------------------------------------- training
@dataclass
class TrainResult:
    """What :func:`train_model` returns.

    ``backbone`` holds the best model (eval mode, CPU) with its preprocessing and class names, the same
    as :func:`~Rad4XCNNLogic.features.backbones.load_checkpoint` gives from ``checkpoint``.
    """

    checkpoint: Path
    history: list[dict]
    best_val_auc: float
    best_epoch: int
    class_names: list[str]
    backbone: Backbone
    failures: list[CaseFailure] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


def _split_validation(train: list[Case], fraction: float, seed: int) -> tuple[list[Case], list[Case]]:
    """Move a seeded, label-stratified ``fraction`` of the training cases to validation."""
    by_label: dict[str, list[Case]] = {}
    for c in sorted(train, key=lambda c: c.case_id):
        by_label.setdefault(c.label or "", []).append(c)
    rng = np.random.default_rng(seed)
    val_ids: set[str] = set()
    for label in sorted(by_label):
        group = by_label[label]
        k = min(len(group) - 1, max(1, round(fraction * len(group)))) if len(group) > 1 else 0
        val_ids.update(group[i].case_id for i in rng.permutation(len(group))[:k])
    return [c for c in train if c.case_id not in val_ids], [c for c in train if c.case_id in val_ids]


def _select_cases(
    cohort: Cohort | Sequence[Case],
    train_cohort: str | None,
    include_normal: bool,
    val_fraction: float,
    seed: int,
) -> tuple[list[Case], list[Case], list[CaseFailure]]:
    cases = list(cohort.cases if isinstance(cohort, Cohort) else cohort)
    if train_cohort is not None:
        names = sorted({c.cohort for c in cases})
        cases = [c for c in cases if c.cohort == train_cohort]
        if not cases:
            raise Rad4XCNNError(f"no case of cohort {train_cohort!r} to train on; the cohorts are {names}")
    if not include_normal:
        cases = [c for c in cases if c.has_lesion]
    failures = [
        CaseFailure(c.case_id, STAGE, "no label: left out of training")
        for c in cases
        if c.split in ("train", "val") and not c.label
    ]
    train = [c for c in cases if c.split == "train" and c.label]
    val = [c for c in cases if c.split == "val" and c.label]
    if not train:
        raise Rad4XCNNError(
            "no labelled case in the train split"
            + (f" of cohort {train_cohort!r}" if train_cohort else "")
            + "; give splits in the manifest or let 'rad4xcnn cohort' assign them"
        )
    if not val:
        train, val = _split_validation(train, val_fraction, seed)
        log.info(
            "no val split given: %d of the training cases (%.0f%%, stratified, seed %d) validate",
            len(val),
            100 * val_fraction,
            seed,
        )
    return train, val, failures


def _lr_lambda(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _class_weight(y_train, counts: Counter, n_classes: int, device):
    """Each class weighted inversely to its share of the training cases (the loss's class weights)."""
    import torch

    weights = [len(y_train) / (n_classes * max(1, counts.get(i, 0))) for i in range(n_classes)]
    return torch.tensor(weights, dtype=torch.float32, device=device)


def _classes(backbone, train_labels: list[str], val, failures: list) -> tuple[list[str], list]:
    """(the class names in head order, the validation cases of those classes); a checkpoint continued on
    the same classes keeps its order. Refuses one class, or a validation split without two."""
    if backbone.class_names and sorted(backbone.class_names) == train_labels:
        class_names = list(backbone.class_names)  # continue a checkpoint: keep its class order and head
    else:
        class_names = train_labels
    if len(class_names) < 2:
        raise Rad4XCNNError(f"training needs at least two classes; the train split has only {class_names}")
    unknown = [c for c in val if c.label not in class_names]
    failures += [
        CaseFailure(c.case_id, STAGE, f"validation label {c.label!r} is not a training class {class_names}")
        for c in unknown
    ]
    val = [c for c in val if c.label in class_names]
    val_classes = sorted({c.label for c in val})
    if len(val_classes) < 2:
        raise Rad4XCNNError(
            f"the validation split has {len(val)} case(s) of {val_classes or 'no class'}; the validation AUC "
            "needs cases of at least two classes (add val cases or raise val_fraction)"
        )
    return class_names, val


def _with_head(backbone, class_names: list[str], seed: int):
    """The backbone's network, with a new (seeded) classifier head when it was trained on other classes."""
    import torch

    net = backbone.model
    if backbone.num_classes != len(class_names) or (backbone.class_names or class_names) != class_names:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net.reset_classifier(len(class_names))
        if backbone.class_names:
            log.info("new classifier head for %s (the checkpoint had %s)", class_names, backbone.class_names)
    return net


@dataclass
class _Data:
    """The training and validation cases as datasets, targets and loaders."""

    train_set: Any
    val_set: Any
    y_train: np.ndarray
    y_val: np.ndarray
    train_loader: Any
    val_loader: Any

    @classmethod
    def of(
        cls,
        train,
        val,
        index_of,
        config,
        augmenter,
        batch,
        val_batch,
        workers,
        device_type,
        seed,
        volumes=None,
    ) -> _Data:
        from Rad4XCNNLogic.features.preprocessing import CaseDataset, make_loader

        if volumes is not None and volumes.get("network") == "3d":  # one cube per case
            from Rad4XCNNLogic.features.cubes import CubeDataset

            train_set = CubeDataset(train, config, augment=augmenter, seed=seed)
            val_set = CubeDataset(val, config)
        elif volumes is not None:  # 2.5D: one item per lesion slice, labelled with its case's label
            from Rad4XCNNLogic.features.slices import SliceDataset

            train_set = SliceDataset(train, config, **volumes, augment=augmenter, seed=seed)
            val_set = SliceDataset(val, config, **volumes)
        else:
            train_set = CaseDataset(train, config, augment=augmenter, seed=seed)
            val_set = CaseDataset(val, config)
        train_loader = make_loader(
            train_set,
            batch_size=batch,
            num_workers=workers,
            device_type=device_type,
            shuffle=True,
            drop_last=len(train_set) % batch == 1,  # a batch of one breaks batch norm
            seed=seed,
        )
        val_loader = make_loader(val_set, batch_size=val_batch, num_workers=workers, device_type=device_type)
        y_train = np.array([index_of[c.label] for c in train_set.cases])
        y_val = np.array([index_of[c.label] for c in val_set.cases])
        return cls(train_set, val_set, y_train, y_val, train_loader, val_loader)


def _volume_input(model: str, cases: Sequence[Case], planes: str, max_slices: int) -> dict | None:
    """How volume cases reach the network: None for 2D images, one cube per case for a 3D network,
    the lesion slices (2.5D) for a 2D network."""
    volumes = any(c.dims == 3 for c in cases)
    check_images(model, volumes)
    if is_volume_net(model):
        return {"network": "3d"}
    return {"planes": planes, "max_slices": max_slices} if volumes else None


def _starts_pretrained(model: str | None, weights, pretrained: bool) -> bool:
    """Whether training starts from ImageNet's weights: a file or checkpoint is the start, and a 3D network
    has no ImageNet weights (it starts from random ones)."""
    if is_volume_net(model) and pretrained and weights is None:
        log.info("%s has no ImageNet weights: training.pretrained does not apply, it starts at random", model)
        return False
    return pretrained and weights is None


def _volume_record(volumes: dict, train_set) -> dict:
    """The training's ``volumes`` settings: with the slices trained on for 2.5D."""
    return {**volumes, "train_slices": len(train_set)} if "planes" in volumes else dict(volumes)


def _optimiser(net, lr: float, weight_decay: float, warmup_epochs: int, epochs: int, steps: int):
    """AdamW (no decay on biases and norms) and its schedule: linear warm-up, then cosine decay to 0."""
    import torch

    decay = [p for p in net.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in net.parameters() if p.requires_grad and p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        foreach=True,  # one fused update over all tensors (PyTorch uses it on CUDA only by default): CPU too
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(min(warmup_epochs * steps, epochs * steps - 1) or 1, epochs * steps)
    )
    return optimizer, scheduler


@dataclass
class _Step:
    """One epoch's passes: training over the train loader, then the validation predictions."""

    net: Any
    criterion: Any
    device: Any
    compute_dtype: Any
    config: Any
    channels_last: bool
    failures: list

    def note_failures(self, dataset, bad) -> None:
        """Record each unreadable case once (it is skipped every epoch)."""
        known = {f.case_id for f in self.failures}
        for index, problem in bad:
            case_id = dataset.cases[index].case_id
            if case_id not in known:
                known.add(case_id)
                self.failures.append(CaseFailure(case_id, STAGE, problem))
                log.warning("case %s: %s", case_id, problem)

    def to_input(self, grey):
        import torch

        from Rad4XCNNLogic.features.preprocessing import normalize_batch

        x = normalize_batch(grey.to(self.device, non_blocking=True), self.config)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _autocast(self):
        import torch

        enabled = self.compute_dtype != torch.float32
        return torch.autocast(device_type=self.device.type, dtype=self.compute_dtype, enabled=enabled)

    def train(self, loader, dataset, y, optimizer, scheduler) -> tuple[float, int]:
        """(summed loss, cases seen) of one pass over the training batches."""
        import torch

        self.net.train()
        total_loss, seen = 0.0, 0
        for indices, grey, bad in loader:
            self.note_failures(dataset, bad)
            if grey is None or len(indices) < 2:
                continue
            target = torch.as_tensor(y[indices], device=self.device)
            with self._autocast():
                logits = self.net(self.to_input(grey))
            loss = self.criterion(logits.float(), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.detach().item() * len(indices)
            seen += len(indices)
        return total_loss, seen

    def validate(self, loader, dataset, y) -> tuple[list, list, float]:
        """(class probabilities per batch, labels, summed loss) over the validation batches; for slices of
        volumes, the probabilities and labels are per case, the slices' probabilities averaged."""
        import torch

        self.net.eval()
        probs, labels, val_loss, items = [], [], 0.0, []
        with torch.inference_mode():
            for indices, grey, bad in loader:
                self.note_failures(dataset, bad)
                if grey is None:
                    continue
                with self._autocast():
                    logits = self.net(self.to_input(grey)).float()
                target = torch.as_tensor(y[indices], device=self.device)
                val_loss += float(self.criterion(logits, target)) * len(indices)
                probs.append(torch.softmax(logits, dim=1).cpu().numpy())
                labels.extend(y[indices].tolist())
                items.extend(indices)
        if probs and hasattr(dataset, "case_index"):
            from Rad4XCNNLogic.features.slices import per_case

            mean, case_labels = per_case(dataset.case_index, items, np.concatenate(probs), labels)
            return [mean], case_labels, val_loss * len(case_labels) / len(labels)
        return probs, labels, val_loss


@dataclass
class _Checkpoint:
    """The training's record: each epoch's history, the best epoch (validation AUC; a tie goes to the lower
    validation loss) and its weights, saved to ``out`` at each improvement."""

    out: Path
    model_name: str
    config: Any
    class_names: list[str]
    seed: int
    settings: dict
    history: list = field(default_factory=list)
    best_auc: float = -math.inf
    best_loss: float = math.inf
    best_epoch: int = 0
    best_state: Any = None

    def save(self) -> None:
        from Rad4XCNNLogic.features.backbones import save_checkpoint

        save_checkpoint(
            self.out,
            self.best_state,
            self.model_name,
            self.config,
            class_names=self.class_names,
            history=self.history,
            best_metric={"name": "val_auc", "value": float(self.best_auc), "epoch": int(self.best_epoch)},
            seed=self.seed,
            extra={"training": self.settings},
        )

    def best_backbone(self, net, weights) -> Backbone:
        """The network with the best epoch's weights, on the CPU, ready to use."""
        import torch

        net = net.to("cpu")
        net.load_state_dict(self.best_state)
        net = net.to(memory_format=torch.contiguous_format).eval()
        meta = {"model_name": self.model_name, "class_names": self.class_names, "history": self.history}
        return Backbone(
            net, self.model_name, self.config, weights, len(self.class_names), self.class_names, meta
        )

    def epoch(
        self, epoch: int, epochs: int, patience: int, step: _Step, data: _Data, optimizer, scheduler, bar
    ):
        """Train and validate one epoch, record it, keep its weights when best; False to stop early."""
        t0 = time.perf_counter()
        total_loss, seen = step.train(data.train_loader, data.train_set, data.y_train, optimizer, scheduler)
        probs, labels, val_loss = step.validate(data.val_loader, data.val_set, data.y_val)
        if not probs or seen == 0:
            raise Rad4XCNNError("no training or validation case could be read; see the failures above")
        proba = np.concatenate(probs)
        auc = roc_auc(labels, proba)
        record = {
            "epoch": epoch,
            "train_loss": total_loss / seen,
            "val_loss": val_loss / len(labels),
            "val_auc": auc,
            "val_accuracy": float(np.mean(proba.argmax(1) == np.asarray(labels))),
            "lr": float(optimizer.param_groups[0]["lr"]),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        self.history.append(record)
        bar.set_postfix(loss=f"{record['train_loss']:.3f}", val_auc=f"{auc:.3f}")
        bar.update(1)
        log.info(
            "epoch %d/%d: train loss %.4f, val loss %.4f, val AUC %.4f",
            epoch,
            epochs,
            record["train_loss"],
            record["val_loss"],
            auc,
        )
        # a tie in AUC (common at 1.0 on a small validation set) goes to the lower validation loss: the
        # better calibrated model, whose batch-norm statistics have caught up with its weights
        if auc > self.best_auc + 1e-6 or (
            auc >= self.best_auc - 1e-6 and record["val_loss"] < self.best_loss
        ):
            self.best_auc, self.best_loss, self.best_epoch = auc, record["val_loss"], epoch
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in step.net.state_dict().items()}
            self.save()
        elif epoch - self.best_epoch >= patience:
            log.info(
                "early stop: no better validation AUC for %d epochs (best %.4f)", patience, self.best_auc
            )
            return False
        return True


def train_model(
    cohort: Cohort | Sequence[Case],
    model: str | None = None,
    settings: TrainingConfig | None = None,
    *,
    device: str = "auto",
    out: str | os.PathLike = "model.pt",
    weights: str | os.PathLike | None = None,
    margin: float | None = None,
    num_workers: int | None = None,
    weight_decay: float = 0.05,
    warmup_epochs: int = 1,
    train_cohort: str | None = None,
    include_normal: bool = False,
    seed: int = 0,
    progress: bool = True,
    planes: str = DEEP.planes,
    max_slices: int = DEEP.max_slices,
) -> TrainResult:
    """Fine-tune a backbone to classify the cohort's labels; the best epoch (validation AUC) is saved.

    Parameters
    ----------
    cohort : cases with ``split`` train / val (val is carved out of train, ``val_fraction`` of it,
        stratified, when absent) and ``label``. Cases without a lesion are left out unless
        ``include_normal``.
    model : timm name; None with a rad4xcnn checkpoint as ``weights`` continues that model (phase two).
    settings : the ``training`` section (:class:`~Rad4XCNNLogic.features.settings.TrainingConfig`; None:
        its defaults), the one statement of ``epochs``, ``patience``, ``batch_size``, ``learning_rate``,
        ``input_size``, ``augment`` (:class:`UltrasoundAugmentation`'s defaults), ``val_fraction``,
        ``dtype`` and ``pretrained``; its ``phases`` and ``finetune_manifest`` are the training stage's.
    device : as in :func:`~Rad4XCNNLogic.features.deep.extract_deep_features` (bf16 on CUDA).
    out : checkpoint path, written atomically at each improvement.
    weights : the starting point: ``"imagenet"``, a state dict file, or a rad4xcnn checkpoint; None:
        ImageNet's weights when ``settings.pretrained``, else a seeded random initialisation (the run
        says so).
    margin, num_workers : preprocessing (``deep.margin``; None: 0.1, or the checkpoint's) and the
        image-decoding workers (``deep.num_workers``; None: automatic).
    weight_decay, warmup_epochs : AdamW with linear warm-up then cosine decay to 0.
    train_cohort : train and validate on this cohort only (two-phase protocol).
    planes, max_slices : volumes (2.5D): the network learns from the lesion slices, each with its case's label
        (:class:`~Rad4XCNNLogic.features.slices.SliceDataset`); validation averages them per case.

    Examples
    --------
    >>> settings = TrainingConfig(epochs=20)
    >>> r = train_model(cohort, "resnet18", settings, weights="imagenet", out="phase1.pt")  # doctest: +SKIP
    >>> r2 = train_model(cohort, None, settings, weights=r.checkpoint, train_cohort="site2")  # doctest: +SKIP
    >>> r2.best_val_auc  # doctest: +SKIP
    0.91
    """
    import timm
    import torch

    from Rad4XCNNLogic.features.backbones import build_backbone, resolve_device, resolve_dtype
    from Rad4XCNNLogic.features.preprocessing import default_workers

    section = check_section(settings or TrainingConfig(), "training")
    epochs, batch_size, patience = section.epochs, section.batch_size, section.patience
    lr, input_size, dtype = section.learning_rate, section.input_size, section.dtype
    pretrained = _starts_pretrained(model, weights, section.pretrained)
    started = time.perf_counter()
    train, val, failures = _select_cases(cohort, train_cohort, include_normal, section.val_fraction, seed)

    train_labels = sorted({c.label for c in train})
    backbone = build_backbone(
        model,
        weights,
        pretrained=pretrained,
        num_classes=len(train_labels),
        seed=seed,
        input_size=input_size,
        margin=margin,
        to_be_trained=True,
    )
    class_names, val = _classes(backbone, train_labels, val, failures)
    index_of = {name: i for i, name in enumerate(class_names)}
    net = _with_head(backbone, class_names, seed)
    config = backbone.preprocess

    dev = resolve_device(device)
    compute_dtype = resolve_dtype(dtype, dev)
    channels_last = dev.type == "cuda" and not is_volume_net(backbone.name)  # for 2D networks
    net = net.to(dev, memory_format=torch.channels_last) if channels_last else net.to(dev)
    torch.manual_seed(seed)  # dropout, stochastic depth

    augmenter = UltrasoundAugmentation() if section.augment else None
    if num_workers is None:
        num_workers = default_workers(dev.type, len(train), batch_size)
    batch = min(batch_size, len(train))
    volumes = _volume_input(backbone.name, train + val, planes, max_slices)
    data = _Data.of(
        train, val, index_of, config, augmenter, batch, batch_size, num_workers, dev.type, seed, volumes
    )
    y_train = data.y_train
    counts = Counter(y_train.tolist())
    class_weight = _class_weight(y_train, counts, len(class_names), dev)
    criterion = torch.nn.CrossEntropyLoss(weight=class_weight)
    optimizer, scheduler = _optimiser(
        net, lr, weight_decay, warmup_epochs, epochs, max(1, len(data.train_loader))
    )
    settings = {
        "model": backbone.name,
        "epochs": epochs,
        "batch_size": batch,
        "lr": lr,
        "weight_decay": weight_decay,
        "warmup_epochs": warmup_epochs,
        "patience": patience,
        "augment": asdict(augmenter) if augmenter is not None else None,
        "train_cohort": train_cohort,
        "train_cases": len(train),
        "val_cases": len(val),
        "class_counts": {class_names[i]: int(k) for i, k in sorted(counts.items())},
        "class_weight": [round(float(w), 6) for w in class_weight.cpu()],
        "device": str(dev),
        "dtype": str(compute_dtype).replace("torch.", ""),
        "num_workers": num_workers,
        "base_weights": backbone.weights.to_dict(),
        "versions": {"torch": torch.__version__, "timm": timm.__version__},
        **({"volumes": _volume_record(volumes, data.train_set)} if volumes else {}),
    }
    log.info(
        "training %s on %d cases, validating on %d (%s), %s on %s",
        backbone.name,
        len(train),
        len(val),
        ", ".join(f"{k}: {v}" for k, v in settings["class_counts"].items()),
        settings["dtype"],
        dev,
    )
    checkpoint = _Checkpoint(Path(out), backbone.name, config, class_names, seed, settings)
    step = _Step(net, criterion, dev, compute_dtype, config, channels_last, failures)
    bar = ProgressBar(
        epochs, desc=f"train {backbone.architecture}", stage="train", unit="epoch", enabled=progress
    )
    with bar:
        for epoch in range(1, epochs + 1):
            data.train_set.epoch = epoch
            if not checkpoint.epoch(epoch, epochs, patience, step, data, optimizer, scheduler, bar):
                break
    checkpoint.save()
    c = checkpoint
    best = c.best_backbone(net, backbone.weights)
    settings["seconds"] = round(time.perf_counter() - started, 3)
    log.info("best validation AUC %.4f at epoch %d; checkpoint %s", c.best_auc, c.best_epoch, c.out)
    return TrainResult(
        c.out, c.history, float(c.best_auc), c.best_epoch, class_names, best, failures, settings
    )
