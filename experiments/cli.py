"""`ltc`: the lottery-channels command line. `ltc <command> --help` lists each command's flags."""
from __future__ import annotations

import importlib
import sys

from lth.errors import LTCError

COMMANDS = {
    "imp": ("experiments.commands.imp", "run IMP with controls and spectra (the default experiment)"),
    "spectra": ("experiments.commands.spectra", "spectra of a run's saved weights, without training"),
    "seeds": ("experiments.commands.seeds", "IMP with controls over several seeds, then the report"),
    "report": ("experiments.commands.report", "the ticket tests and verdict report of one or more runs"),
    "calibrate": ("experiments.commands.calibrate", "the verdict on planted worlds of known truth (confusion matrices)"),
    "workspace": ("experiments.commands.workspace", "a saved W&B workspace comparing an experiment's levels and seeds"),
    "lm": ("experiments.commands.lm", "train the small causal LM of the founding measurement (HF checkpoints)"),
    "jacobian": ("experiments.commands.jacobian", "residual-stream Jacobian spectra of a transformer over many tokens"),
    "bench": ("experiments.commands.bench", "the benchmark suite: ratios measured side by side"),
}


def _usage() -> str:
    lines = ["usage: ltc <command> [--config FILE] [--key.sub value ...]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a command's `main(argv)`; user errors become one line on stderr and exit code 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"ltc: error: unknown command {name!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return int(module.main(rest) or 0)
    except LTCError as exc:
        print(f"ltc {name}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the environment (disk full, permissions, a vanished file), not the input
        print(f"ltc {name}: error: {' '.join(str(exc).split())}; fix that, then re-run the same command "
              "to resume", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ltc {name}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
