"""The ``probe`` command: where each radiomic concept lives in the network. Ridge probes from each layer's
deep features to each radiomic feature, against a control network, and linear CKA (``probes.csv``,
``cka.csv``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from Rad4XCNNLogic.cli.options import add_setting, config_from_args


def cmd_probe(args: argparse.Namespace) -> int:
    import numpy as np

    from Rad4XCNNLogic.cohort.manifest import read_manifest
    from Rad4XCNNLogic.explain.probes import rank_concepts
    from Rad4XCNNLogic.run.probing import probe_stage

    cfg = config_from_args(args)
    # The probes read no image: the manifest gives the cases' splits and cohorts only.
    cohort = read_manifest(
        cfg.manifest,
        check_files=False,
        seed=cfg.seed,
        fractions=cfg.split.fractions,
        train_cohort=cfg.split.train_cohort,
    )
    out = Path(args.out)
    summary = probe_stage(
        Path(args.deep),
        Path(args.radiomics),
        cohort,
        out,
        probe=cfg.probe,
        seed=cfg.seed,
        train_cohort=cfg.split.train_cohort,
        control_csv=Path(args.control) if args.control else None,
        checkpoint=Path(args.checkpoint) if args.checkpoint else None,
        concept_layer=args.concept_layer,
        target_class=args.target_class,
    )
    probes = summary["probes"]
    print(
        f"probes: {probes['radiomic_feature'].nunique()} radiomic features x {len(summary['layers'])} "
        f"layer(s), {summary['train_cases']} training and {summary['heldout_cases']} held-out cases "
        f"({cfg.probe.folds}-fold CV, {cfg.probe.bootstrap} bootstrap resamples)"
    )
    for (model, layer), part in probes.groupby(["model", "layer"], sort=False):
        line = f"  {model}.{layer}: median R² {np.nanmedian(part['r2']):.3f}"
        if part["selectivity"].notna().any():
            top = rank_concepts(part).iloc[0]  # chosen on the training folds' CV error, measured held out
            line += (
                f", median selectivity {np.nanmedian(part['selectivity']):.3f}; most selective by CV of "
                f"{len(part)}: {top['radiomic_feature']} (held-out R² {top['r2']:.2f} vs control "
                f"{top['r2_control']:.2f}, selectivity {top['selectivity']:+.2f} "
                f"[{top['selectivity_ci_low']:+.2f}, {top['selectivity_ci_high']:+.2f}])"
            )
        else:
            line += " (no control layer: no selectivity)"
        print(line)
    cka = summary["cka"]
    for row in cka[cka["kind"] == "radiomics"].itertuples():
        print(
            f"  CKA {row.model_a}.{row.layer_a} ~ radiomics: {row.cka:.3f} "
            f"(null {row.null_mean:.3f}, p {row.p:.3g})"
        )
    concepts = summary["concepts"]
    if concepts is not None:
        print(f"  sensitivity of class {concepts['target_class'].iloc[0]!r} (TCAV, held-out cases):")
        for row in concepts.itertuples():
            print(
                f"    {row.radiomic_feature} in {row.model}.{row.layer}: {row.tcav:.2f} of "
                f"{row.n_cases} cases (random directions {row.tcav_random_mean:.2f}, p {row.p:.3g})"
            )
    print(f"wrote {', '.join(Path(p).name for p in summary['outputs'])} to {out}")
    return 0


def register(sub, parents: dict) -> None:
    p = sub.add_parser(
        "probe",
        parents=[parents["seed"]],
        help="where each radiomic concept lives: ridge probes per layer against a control network, and CKA",
        description=(
            "For each (backbone, layer) of the deep table and each radiomic feature: a ridge regression "
            "from the layer's deep features to the feature's ranks, its penalty chosen by cross-validation "
            "on the training cases (train and val splits of the training cohort), R² on the held-out cases "
            "(its test split and the other cohorts) with a bootstrap interval; the same probe on the control "
            "network's layer gives r2_control, and selectivity = r2 - r2_control (against a random-weights "
            "network, not a control task), with a paired bootstrap interval; the 'most selective' concepts "
            "are chosen on the training folds' CV error, then measured held out. Also linear CKA of each "
            "layer with the radiomic table, between layers and backbones, and against the control, with a "
            "permutation baseline. Writes probes.csv, probes.json and cka.csv (and concepts.csv with "
            "--checkpoint). Give a run's cohort.csv as "
            "the manifest to use the run's splits."
        ),
    )
    p.add_argument("--deep", required=True, help="deep_features.csv (case_id x deep features of any layers)")
    p.add_argument("--radiomics", required=True, help="radiomics.csv (case_id x radiomic features)")
    add_setting(p, "manifest", "--manifest", required=True)
    p.add_argument(
        "--control",
        metavar="CSV",
        help="deep features of the control network (random weights), same cases and layers; default: a "
        "'<label>-random' backbone in --deep, else no selectivity",
    )
    add_setting(p, "split.train_cohort", "--cohort", help="the training cohort (the others are held out)")
    add_setting(p, "probe.penalties", "--penalties", comma=True, metavar="L1,L2,...")
    add_setting(p, "probe.folds", "--folds")
    add_setting(p, "probe.bootstrap", "--bootstrap")
    add_setting(p, "probe.permutations", "--permutations")
    add_setting(p, "probe.backend", "--backend")
    p.add_argument(
        "--checkpoint",
        metavar="PT",
        help="a fine-tuned checkpoint whose features --deep holds: also measure its classifier's "
        "sensitivity to the most selective concepts on the held-out cases (concepts.csv; reads the images)",
    )
    p.add_argument(
        "--concept-layer",
        metavar="MODEL.LAYER",
        help="the probed layer of the concept directions (default: the first backbone's last layer probed)",
    )
    p.add_argument(
        "--target-class", help="the class whose logit is followed (default: malignant, else the last)"
    )
    add_setting(p, "probe.concepts", "--concepts")
    add_setting(p, "probe.random_directions", "--random-directions")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_probe)
