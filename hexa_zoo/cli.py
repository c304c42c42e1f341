"""The `hexa` command (also `python -m hexa_zoo`).

Each subcommand lives in its own module with a `main(argv) -> int` and its own argparse
parser; this file only dispatches to it, importing lazily by module name so that `hexa zoo list`
never pays for importing the trainer or the transfer suite. It is the one place in hexa_zoo/ that
names the floors above it (pretrain, transfer, leaderboards, orchestration), and only as strings.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Callable

from .errors import HexaError

# name -> (module, one-line description)
SUBCOMMANDS = {
    "zoo": ("hexa_zoo.zoo_cli", "list, inspect, convert and publish model weights"),
    "pretrain": ("pretrain.cli", "self-supervised pre-training (MoCo-v2, DeepCluster-v2, SwAV and their HEXA variants)"),
    "transfer": ("transfer.cli", "transfer evaluation: linear, knn, lowshot-svm, semisup, fewshot, detection, "
                                 "manyshot, adversarial, robustness, finetune, or the whole suite"),
    "leaderboard": ("leaderboards.cli", "compile result records into board/"),
    "demo": ("orchestration.demo", "pre-train, publish, transfer and compare on the embedded dataset"),
    "study": ("orchestration.study", "methods x seeds, HEXA against its baseline with confidence intervals"),
}

# `hexa transfer suite ... --plan` prices a suite with orchestration's measured step rates, which transfer/ (a
# floor below) may not import: the router sends it to the floor that may.
PLAN = "orchestration.suite_plan"

USAGE = """usage: hexa <command> [options]

commands:
{commands}

Run `hexa <command> --help` for the options and an example of each.
Example: hexa zoo list
"""


def _usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = [f"  {name:<{width}}  {desc}" for name, (_, desc) in SUBCOMMANDS.items()]
    return USAGE.format(commands="\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        from . import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"hexa: unknown command {name!r}.\n\n{_usage()}", file=sys.stderr)
        return 2
    # Imported inside run_command's guard: a Ctrl-C while torch loads is one line too.
    module = PLAN if name == "transfer" and rest[:1] == ["suite"] and "--plan" in rest else SUBCOMMANDS[name][0]
    return run_command(f"hexa {name}", lambda args: importlib.import_module(module).main(args), rest)


def run_command(prog: str, command_main: Callable[[list[str]], int | None], argv: list[str]) -> int:
    """Run a job's `main(argv)` as a command: INFO logging, a HexaError as its message and fix (exit 1)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return int(command_main(argv) or 0)
    except HexaError as err:
        print(f"{prog}: error: {err.message}", file=sys.stderr)
        if err.fix:
            print(f"  fix: {err.fix}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
