"""The services' flags are generated from their settings models: every setting has one, with
the Field's words as help, and a flag given lands in the resolved settings."""

from __future__ import annotations

import argparse

import pytest
from pydantic import BaseModel, SecretStr

from krl.allocator.settings import AllocatorSettings
from krl.cli import UP_SETS, build_parser
from krl.common.config import load_settings
from krl.common.flags import given
from krl.rollout.settings import RolloutSettings
from krl.trainer.settings import TrainerSettings

SERVICES = {"allocator": AllocatorSettings, "rollout": RolloutSettings, "trainer": TrainerSettings}


def _flags(command: str) -> set[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return {o for a in sub.choices[command]._actions for o in a.option_strings}


def _plain_fields(model: type[BaseModel]) -> set[str]:
    """Fields a flag can carry (no nested model, no inline secret)."""
    out = set()
    for name, f in model.model_fields.items():
        text = repr(f.annotation)
        if (
            "SecretStr" in text
            or "Config" in text
            or (isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel | SecretStr))
        ):
            continue
        out.add(name)
    return out


@pytest.mark.parametrize("command", sorted(SERVICES))
def test_every_setting_has_a_flag(command: str) -> None:
    flags = _flags(command)
    missing = {
        n for n in _plain_fields(SERVICES[command]) if "--" + n.replace("_", "-") not in flags
    }
    assert not missing, missing
    assert "--auth-token" not in flags  # a secret on a command line is visible in ps


def test_up_takes_the_trainer_flags_it_does_not_set_itself() -> None:
    flags = _flags("up")
    for name in _plain_fields(TrainerSettings) - UP_SETS:
        assert "--" + name.replace("_", "-") in flags, name
    assert "--grpc-port" not in flags and "--replicas" in flags


def test_flags_land_in_the_settings_and_unknown_choices_are_refused(tmp_path) -> None:
    args = build_parser().parse_args(
        [
            "allocator",
            "--max-allocations-kept",
            "7",
            "--redis-timeout-s",
            "0.5",
            "--data-dir",
            str(tmp_path),
        ]
    )
    s = load_settings(AllocatorSettings, None, given(args, args.setting_names))
    assert (s.max_allocations_kept, s.redis_timeout_s, s.data_dir) == (7, 0.5, tmp_path)
    args = build_parser().parse_args(["trainer", "--strategy", "uniform", "--resume"])
    assert given(args, args.setting_names) == {"strategy": "uniform", "resume": True}
    args = build_parser().parse_args(["rollout", "--verify-workers", "3", "--engine", "hf"])
    assert given(args, args.setting_names) == {"verify_workers": 3}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["trainer", "--strategy", "magic"])


def test_an_experiment_on_the_loop_hands_its_solve_settings_to_every_run() -> None:
    """--objective and --visit-half-life reach each `krl up` (they were once simulator-only and
    silently dropped on the loop); the trainer refuses an objective it does not know."""
    from krl.experiment.cli import _loop_settings, _sim_config
    from krl.experiment.runner import up_flags

    argv = ["experiment", "--backend", "loop", "--objective", "paper", "--visit-half-life", "2"]
    args = build_parser().parse_args(argv)
    flags = up_flags(_loop_settings(args, _sim_config(args)))
    assert flags[flags.index("--objective") + 1] == "paper"
    assert float(flags[flags.index("--visit-half-life") + 1]) == 2.0
    up = build_parser().parse_args(["up", *flags])
    assert given(up, up.setting_names)["objective"] == "paper"
    args = build_parser().parse_args(["experiment", "--backend", "loop"])
    assert "--objective" not in up_flags(_loop_settings(args, _sim_config(args)))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["trainer", "--objective", "gradient"])


def test_help_is_the_fields_description() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    action = next(
        a for a in sub.choices["rollout"]._actions if "--verify-timeout-s" in a.option_strings
    )
    assert action.help.startswith(RolloutSettings.model_fields["verify_timeout_s"].description[:30])


def _commands(parser: argparse.ArgumentParser, path: str = "krl"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, f"{path} {name}")


def test_every_command_and_flag_has_help():
    from krl.cli import build_parser

    missing = [
        f"{path} {action.option_strings[-1] if action.option_strings else action.dest}"
        for path, parser in _commands(build_parser())
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction | argparse._HelpAction)
        and not action.help
    ]
    assert missing == []
