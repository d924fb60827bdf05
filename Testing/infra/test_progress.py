"""Progress: silent, tqdm, or JSON lines that a parent process parses back."""

from __future__ import annotations

from Rad4XCNNLogic.infra.progress import ENV, emit, parse_progress_line, track


def test_jsonl_events_round_trip(monkeypatch, capsys):
    monkeypatch.setenv(ENV, "jsonl")
    assert list(track(range(3), desc="radiomics", stage="radiomics")) == [0, 1, 2]
    emit("stage-end", "radiomics", seconds=1.5)
    lines = capsys.readouterr().out.splitlines()
    events = [parse_progress_line(line) for line in lines]
    assert events[0] == {
        "event": "progress",
        "stage": "radiomics",
        "done": 0,
        "total": 3,
        "message": "radiomics",
    }
    assert events[-2]["done"] == 3 and events[-2]["total"] == 3
    assert events[-1] == {"event": "stage-end", "stage": "radiomics", "seconds": 1.5}


def test_plain_lines_and_broken_json_are_not_events():
    assert parse_progress_line("INFO: hello") is None
    assert parse_progress_line("@rad4xcnn {not json") is None
    assert parse_progress_line('@rad4xcnn {"no_event": 1}') is None


def test_disabled_and_human_modes_write_no_events(monkeypatch, capsys):
    monkeypatch.delenv(ENV, raising=False)
    assert list(track([1, 2], enabled=False)) == [1, 2]
    assert list(track([1, 2], desc="x")) == [1, 2]
    emit("message", "x", message="hi")
    assert "@rad4xcnn" not in capsys.readouterr().out
