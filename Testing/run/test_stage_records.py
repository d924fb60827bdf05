"""The stage records: the files each stage reads and writes agree with the stages it depends on."""

from __future__ import annotations

from Rad4XCNNLogic.run.stages import STAGES


def test_each_stage_reads_what_the_stages_it_depends_on_write():
    writer = {}
    for stage in STAGES:
        for name in stage.writes:
            assert name not in writer, f"{name} is written by {writer.get(name)} and {stage.name}"
            writer[name] = stage.name
    for stage in STAGES:
        unwritten = [name for name in stage.reads if name not in writer]
        assert not unwritten, f"{stage.name} reads {unwritten}, which no stage writes"
        assert {writer[name] for name in stage.reads} == set(stage.depends), stage.name
