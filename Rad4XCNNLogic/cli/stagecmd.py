"""Stage commands made from the stage records (:data:`Rad4XCNNLogic.run.stages.STAGES`): a command runs its
stage's plan function, the one ``rad4xcnn run`` runs, on the files the user names
(:class:`~Rad4XCNNLogic.run.onfiles.StageOnFiles`).

Its file flags come from the record's ``reads`` (one flag per file the user gives, help from
:data:`~Rad4XCNNLogic.names.FILE_HELP`), its setting flags from the configuration's metadata
(:func:`~Rad4XCNNLogic.cli.options.add_setting`), ``--config`` takes a run's configuration file, and
``--out`` receives what it writes. What is particular to a command (a flag that is neither a file nor a
setting, a check, the terminal summary) is in its :class:`StageCommand`, next to its printer.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from Rad4XCNNLogic.cli.options import add_setting, config_from_args, show_progress
from Rad4XCNNLogic.names import FILE_HELP, RunFiles
from Rad4XCNNLogic.run.stages import STAGES

#: The flag of each run-folder file that a stage command reads from the user.
READ_FLAGS = {
    RunFiles.COHORT: "--manifest",
    RunFiles.DEEP: "--deep",
    RunFiles.RADIOMICS: "--radiomics",
    RunFiles.EXPLANATIONS: "--explained",
}


def file_dest(name: str) -> str:
    """The argparse destination of the flag for run file ``name``."""
    return "file__" + READ_FLAGS[name].lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class StageCommand:
    """What a stage command adds to its stage record."""

    stage: str
    help: str
    description: str
    #: the settings it sets: (key, flags, add_setting's keyword arguments)
    settings: tuple[tuple[str, tuple[str, ...], dict], ...]
    #: prints the terminal summary: (args, the stage on files, its summary) -> exit code
    show: Callable[[argparse.Namespace, Any, dict], int]
    #: the read files that may be left out (the others are required)
    optional: tuple[str, ...] = ()
    #: file-flag help that differs from FILE_HELP
    file_help: dict[str, str] = field(default_factory=dict)
    #: adds the flags that are neither files nor settings
    flags: Callable[[argparse.ArgumentParser], None] | None = None
    #: StageOnFiles keyword arguments from the flags (checks, cohorts, more_features; ``files``: more
    #: run files, e.g. the cache; ``out``: the folder of the other outputs when --out names a file that
    #: depends on the settings, e.g. a checkpoint)
    options: Callable[[argparse.Namespace], dict] | None = None
    #: settings that the command's own flags stand for (e.g. the ``models`` of ``--model`` and
    #: ``--weights``): args -> settings, applied over --config and under the setting flags
    config: Callable[[argparse.Namespace], dict] | None = None
    #: checks before the work: (args, the stage on files) -> None
    before: Callable[[argparse.Namespace, Any], None] | None = None
    #: help of --out
    out_help: str = "output folder"
    #: the run file that --out names (its folder receives the other outputs); None: --out is a folder
    out_file: str | None = None
    #: the shared option groups it takes (:func:`~Rad4XCNNLogic.cli.options.parents`)
    parents: tuple[str, ...] = ("seed", "progress")


def _handler(command: StageCommand, reads: tuple[str, ...]):
    def handle(args: argparse.Namespace) -> int:
        from Rad4XCNNLogic.run.onfiles import StageOnFiles

        cfg = config_from_args(args, args.config)  # the setting flags checked before any file is read
        if command.config is not None:
            cfg = config_from_args(args, args.config, command.config(args))
        files = {name: getattr(args, file_dest(name)) for name in reads}
        extra = dict(command.options(args)) if command.options else {}
        files.update(extra.pop("files", {}))
        out = Path(extra.pop("out", args.out))
        if command.out_file is not None:
            files[command.out_file], out = out, out.parent
        run = StageOnFiles(
            command.stage,
            cfg,
            files,
            out,
            progress=show_progress(args),
            configured=args.config is not None,
            **extra,
        )
        if command.before is not None:
            command.before(args, run)
        return command.show(args, run, run.compute())

    return handle


def add_stage_command(sub, parents: list, stage, command: StageCommand) -> argparse.ArgumentParser:
    """The parser of ``command``, with a flag per file of ``stage.reads`` that a user gives."""
    p = sub.add_parser(stage.name, parents=parents, help=command.help, description=command.description)
    reads = tuple(name for name in stage.reads if name in READ_FLAGS)
    for name in reads:
        p.add_argument(
            READ_FLAGS[name],
            dest=file_dest(name),
            metavar=READ_FLAGS[name].lstrip("-").upper(),
            required=name not in command.optional,
            help=command.file_help.get(name, FILE_HELP[name]),
        )
    p.add_argument(
        "--config",
        metavar="YAML",
        help="a run's configuration file: the settings of its stage (flags given here override them)",
    )
    for key, flags, kwargs in command.settings:
        add_setting(p, key, *flags, **kwargs)
    if command.flags is not None:
        command.flags(p)
    p.add_argument("--out", required=True, help=command.out_help)
    p.set_defaults(func=_handler(command, reads))
    return p


def register(sub, parents: dict, commands: list[StageCommand]) -> None:
    """Register the stage commands in the order of the stages."""
    by_stage = {c.stage: c for c in commands}
    for stage in STAGES:
        command = by_stage.get(stage.name)
        if command is not None:
            add_stage_command(sub, [parents[name] for name in command.parents], stage, command)
