"""Small argparse helpers shared by the command-line scripts."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence


def str2bool(value: str | bool) -> bool:
    """Accept ``--flag True`` / ``--flag false`` / ``--flag 1`` as the upstream README's commands write them."""
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "y", "on"):
        return True
    if lowered in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {value!r}")


CONFIG_FLAG = "--config"


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(CONFIG_FLAG, default=None, metavar="FILE",
                        help="A YAML or JSON file of this command's flags (keys: the flag names without '--', e.g. "
                             "lr: 1.0e-4); flags on the command line override it. train.py's saved config_file.json "
                             "replays a run.")


def parse_with_config(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, with ``--config FILE``'s keys read first as if given before the command line.

    Each key becomes its flag (``key: value`` -> ``--key value``; a list -> ``--key v1 v2``; true for a switch ->
    ``--key``), so argparse checks the values' types and choices as it does on the command line, and a flag given
    again on the command line wins. A key that is no flag of this command is one error naming the file and key.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument(CONFIG_FLAG, default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config is None:
        return parser.parse_args(argv)
    return parser.parse_args(config_argv(parser, known.config) + argv)


def config_argv(parser: argparse.ArgumentParser, path: str) -> list[str]:
    """``path``'s keys as command-line tokens for ``parser``."""
    from .errors import UserInputError

    values = _read_config(path)
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    tokens: list[str] = []
    for key, value in values.items():
        dest = key.lstrip("-").replace("-", "_")
        if dest == "config" or value is None:  # a replayed run's own --config; an unset flag
            continue
        action = actions.get(dest)
        if action is None or dest == "help":
            raise UserInputError(f"unknown key {key!r}: not a flag of this command (see --help)", where=path)
        flag = next((s for s in action.option_strings if s.startswith("--")), action.option_strings[0])
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            if not isinstance(value, bool):
                raise UserInputError(f"{key}: expected true or false, got {value!r}", where=path)
            if value != action.default:
                tokens.append(flag)
        elif isinstance(value, list):
            tokens += [flag, *map(str, value)]
        elif isinstance(value, dict):
            raise UserInputError(f"{key}: expected a value or a list, got a mapping", where=path)
        else:
            tokens += [flag, str(value)]
    return tokens


def _read_config(path: str) -> dict:
    import json
    from pathlib import Path

    from .errors import UserInputError

    file = Path(path)
    if not file.is_file():
        raise UserInputError(f"{path} does not exist", where=CONFIG_FLAG)
    text = file.read_text(encoding="utf-8")
    try:
        if file.suffix == ".json":
            values = json.loads(text)
        else:
            import yaml

            values = yaml.safe_load(text)
    except Exception as err:  # json's and yaml's own errors: say where, in one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserInputError(f"not valid {'JSON' if file.suffix == '.json' else 'YAML'}: {first}", where=path) from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UserInputError(f"expected a mapping of flag names to values, got {type(values).__name__}", where=path)
    return values
