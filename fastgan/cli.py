"""The ``fastgan`` command line: ``fastgan {doctor,train,sample,eval,bench}`` (also ``python -m fastgan``).

Each subcommand lives in its own module exposing ``add_parser(subparsers)``; modules are imported only when
the command line is parsed, so ``import fastgan`` stays light.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module that defines add_parser(subparsers) (which sets func=...)
_COMMANDS = {
    "doctor": "fastgan.doctor",
    "train": "fastgan.train.cli",
    "sample": "fastgan.train.cli",
    "eval": "fastgan.train.cli",
    "bench": "fastgan.bench",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastgan", description="Fused CUDA/C++ GAN kernels for PyTorch.")
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(_COMMANDS) + "}")
    sub.required = True
    seen = set()
    for module in _COMMANDS.values():
        if module in seen:
            continue
        seen.add(module)
        try:
            importlib.import_module(module).add_parser(sub)
        except ModuleNotFoundError as e:  # a subcommand whose module is not present in this version
            if e.name != module:
                raise
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "doctor":  # (doctor reports it among the rest)
        from . import _impl
        try:
            _impl.current()  # a bad FASTGAN_IMPL stops here, not after a run's work
        except RuntimeError as e:
            print(f"fastgan {args.command}: error: {e}", file=sys.stderr)
            return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
