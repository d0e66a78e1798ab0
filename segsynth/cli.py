"""``segsynth <stage> --config FILE [key=value ...]``: one command per stage.

Every config stage takes ``--config`` (a YAML file; the config class's defaults without it),
dotted ``key=value`` overrides, and ``--address`` (or ``RAY_ADDRESS``) to run on a Ray cluster
instead of the embedded local one. A stage is registered below by the module that implements
it; the module is imported only when the stage runs, so ``segsynth --help`` stays fast.

A stage module provides a frozen dataclass config and ``run(cfg, address=None) -> dict``.
Commands that are not config stages (``export``, ``remove``) provide ``add_arguments(parser)``
and ``main(args) -> int``.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys

from segsynth.config import ConfigError, load_config

# stage -> (module, config class, help)
STAGES: dict[str, tuple[str, str, str]] = {
    "cutouts": ("segsynth.pipeline.cutouts", "CutoutsConfig", "catalog photos -> RGBA cutouts + manifest"),
    "synth": ("segsynth.pipeline.synth", "SynthConfig", "cutouts + backgrounds -> synthetic parquet dataset (Ray Data)"),
    "rooms": ("segsynth.pipeline.rooms", "RoomsConfig", "empty rooms with Stable Diffusion -> background library"),
    "train": ("segsynth.pipeline.train", "TrainConfig", "train the FPN model with Ray Train DDP"),
    "eval": ("segsynth.pipeline.evaluate", "EvalConfig", "evaluate models on labelled folders -> report"),
    "serve": ("segsynth.pipeline.serve", "ServeConfig", "serve a model as a batched HTTP endpoint (Ray Serve)"),
    "demo": ("segsynth.demo", "DemoConfig", "the whole pipeline on the demo kit, on a local Ray"),
}
# command -> (module, help): commands with their own arguments
COMMANDS: dict[str, tuple[str, str]] = {
    "export": ("segsynth.export", "export a checkpoint to ONNX or TorchScript"),
    "remove": ("segsynth.remove", "remove backgrounds from files, in-process or through an endpoint"),
}

log = logging.getLogger("segsynth")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="segsynth", description=__doc__.split("\n")[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="stage", metavar="<stage>")
    for name, (_, _, help_) in STAGES.items():
        sp = sub.add_parser(name, help=help_, description=f"segsynth {name}: {help_}")
        sp.add_argument("--config", help="stage config YAML (defaults of the config class when absent)")
        sp.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else an embedded local Ray)")
        sp.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
        sp.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. size=512 shadow.opacity=0.3")
    for name, (module, help_) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_, description=f"segsynth {name}: {help_}")
        sp.set_defaults(_command_module=module)
        try:
            importlib.import_module(module).add_arguments(sp)
        except ImportError as e:  # an optional dependency is missing: say so when it is used
            sp.set_defaults(_import_error=e)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.stage is None:
        _parser().print_help()
        return 2
    try:
        if args.stage in COMMANDS:
            if getattr(args, "_import_error", None):
                raise SystemExit(f"segsynth {args.stage}: {args._import_error}; install with: pip install 'segsynth[all]'")
            return int(importlib.import_module(args._command_module).main(args) or 0)
        module_name, cls_name, _ = STAGES[args.stage]
        module = importlib.import_module(module_name)
        cfg = load_config(getattr(module, cls_name), args.config, args.overrides)
        if args.print_config:
            from segsynth.config import dump_config
            sys.stdout.write(dump_config(cfg))
            return 0
        summary = module.run(cfg, address=args.address)
    except ConfigError as e:
        log.error("config error: %s", e)
        return 2
    if summary:
        sys.stdout.write(json.dumps(summary, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
