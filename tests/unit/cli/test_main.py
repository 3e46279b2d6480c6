"""cli/main.py: every command, however deep, takes `--json` (issue 18: machine-readable output everywhere)."""

from __future__ import annotations

import argparse

from cli.main import build_parser


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
    """Every leaf command's parser by its words, e.g. ("jobs", "watch")."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= commands(sub, (*path, name))
    return found or {path: parser}


REQUIRED = {("ingest",): ["f.jsonl"], ("export",): ["-o", "out.tar.gz"], ("import",): ["a.tar.gz"],
            ("jobs", "watch"): ["j"], ("jobs", "show"): ["j"], ("jobs", "cancel"): ["j"],
            ("maintenance", "run"): ["integrity"], ("admin", "create-org"): ["acme"],
            ("admin", "create-user"): ["ada"]}


def test_every_command_takes_json_and_defaults_to_text():
    parser = build_parser()
    leaves = commands(parser)
    assert {("up",), ("ingest",), ("jobs", "watch"), ("jobs", "show"), ("admin", "bootstrap")} <= set(leaves)
    for words in leaves:
        argv = [*words, *REQUIRED.get(words, [])]
        assert parser.parse_args(argv).json is False, words
        assert parser.parse_args([*argv, "--json"]).json is True, words


def test_json_given_before_the_nested_command_is_kept():
    assert build_parser().parse_args(["jobs", "--json", "watch", "j"]).json is True
