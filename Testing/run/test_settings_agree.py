"""One rule per setting: the configuration file, the command line and the Slicer parameter node accept and
refuse the same values, because all three read the configuration's metadata."""

from __future__ import annotations

import argparse

import pytest

from Rad4XCNNLogic.cli import build_parser
from Rad4XCNNLogic.cli.options import PREFIX
from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.run.config import config_from_dict, setting


def _setting_flags():
    """(command, flag, setting key, argparse action) of every flag that sets a configuration setting."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for command, sub in commands.items():
        for action in sub._actions:
            if action.dest.startswith(PREFIX) and action.type is not None:
                key = action.dest[len(PREFIX) :].replace("__", ".")
                yield command, action.option_strings[0], key, action


FLAGS = list(_setting_flags())


def _probes(key: str) -> list:
    s = setting(key)
    probes = []
    if s.interval is not None:
        iv = s.interval
        for edge in (iv.low, iv.high):
            if edge is not None:
                probes += [edge - 1, edge - 0.5, edge, edge + 0.5, edge + 1]
        if s.item_type is int:
            probes = sorted({int(p) for p in probes})
    if s.choices:
        probes += [*s.choices, "not-a-choice"]
    if s.item_type is str and not s.choices:
        probes += ["some text"]
    if key == "device":
        probes += ["cuda:1", "gpu", "cuda:x"]
    return probes


def _config_accepts(key: str, value) -> bool:
    *sections, name = key.split(".")
    data: dict = {}
    node = data
    for section in sections:
        node = node.setdefault(section, {})
    s = setting(key)
    node[name] = [value] if s.is_list else value
    if sections == ["models"]:
        data = {"models": [{name: value}]}
    try:
        config_from_dict(data)
    except Rad4XCNNError:
        return False
    return True


def _cli_accepts(action, value) -> bool:
    try:
        action.type(str(value))
    except argparse.ArgumentTypeError:
        return False
    return True


def test_every_setting_flag_is_found():
    keys = {key for _, _, key, _ in FLAGS}
    assert {"explain.thresholds", "explain.fdr", "seed", "device", "cam.methods", "deep.margin"} <= keys


@pytest.mark.parametrize("command, flag, key, action", FLAGS, ids=[f"{c} {f}" for c, f, _, _ in FLAGS])
def test_command_line_and_configuration_agree(command, flag, key, action):
    for value in _probes(key):
        assert _cli_accepts(action, value) == _config_accepts(key, value), (command, flag, value)


def test_slicer_parameters_and_configuration_agree():
    pytest.importorskip("slicer")
    from Rad4XCNNLib import parameters

    derived = [p for p in parameters.PARAMETERS if p.setting]
    assert {p.name for p in derived} >= {"Threshold", "Device", "CamMethod"}
    for parameter in derived:
        for value in _probes(parameter.setting):
            try:
                parameter.format(value)
                slicer_ok = True
            except (Rad4XCNNError, ValueError, TypeError):
                slicer_ok = False
            if parameter.kind == "choice" and value not in parameter.choices:
                # a combo box offers only its choices; the rule still refuses anything else
                assert not slicer_ok or _config_accepts(parameter.setting, value), (parameter.name, value)
                continue
            assert slicer_ok == _config_accepts(parameter.setting, value), (parameter.name, value)


def test_threshold_range_is_stated_once():
    """M's range lives in the explanation module; every front-end reports the same interval."""
    from Rad4XCNNLogic.explain.settings import THRESHOLD_RANGE

    assert setting("explain.thresholds").interval is THRESHOLD_RANGE
    assert str(THRESHOLD_RANGE) == "(0, 1]"
    help_texts = [a.help for _, flag, key, a in FLAGS if key == "explain.thresholds"]
    assert help_texts and all("(0, 1]" in text for text in help_texts)
