"""``segsynth <stage> --config FILE [key=value ...]``: one command per stage.

Every config stage takes ``--config`` (a YAML file; the config class's defaults without it),
dotted ``key=value`` overrides, and ``--address`` (or ``RAY_ADDRESS``) to run on a Ray cluster
instead of the embedded local one. A stage is registered below by the module that implements
it; the module is imported only when the stage runs, so ``segsynth --help`` stays fast.

A stage provides a frozen dataclass config (in a light module) and a job module with
``run(cfg, address=None) -> dict``.
Commands that are not config stages (``export``, ``remove``) provide ``add_arguments(parser)``
and ``main(args) -> int``.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys

from segsynth import console
from segsynth.config import ConfigError, apply_storage, dump_config, load_config
from segsynth.io import InputError

# stage -> (config module, config class, job module, help): the config module imports light
# (``--print-config`` needs no Ray or torch); the job module's ``run(cfg, address)`` runs the stage
STAGES: dict[str, tuple[str, str, str, str]] = {
    "cutouts": ("segsynth.cutouts.config", "CutoutsConfig", "segsynth.cutouts.job", "catalog photos -> RGBA cutouts + manifest"),
    "synth": ("segsynth.synth.config", "SynthConfig", "segsynth.synth.job", "cutouts + backgrounds -> synthetic parquet dataset (Ray Data)"),
    "rooms": ("segsynth.rooms.config", "RoomsConfig", "segsynth.rooms.job", "empty rooms with Stable Diffusion -> background library"),
    "train": ("segsynth.train.config", "TrainConfig", "segsynth.train.job", "train the FPN model with Ray Train DDP"),
    "eval": ("segsynth.evaluate.config", "EvalConfig", "segsynth.evaluate.job", "evaluate models on labelled folders -> report"),
    "serve": ("segsynth.serve.config", "ServeConfig", "segsynth.serve.job", "serve a model as a batched HTTP endpoint (Ray Serve)"),
    "demo": ("segsynth.demo", "DemoConfig", "segsynth.demo", "the whole pipeline on the demo kit, on a local Ray"),
    "pipeline": ("segsynth.demo", "PipelineConfig", "segsynth.demo",
                 "cutouts -> rooms -> synth -> train -> eval -> export, resuming where a failed run stopped"),
}
# command -> (module, help): commands with their own arguments
COMMANDS: dict[str, tuple[str, str]] = {
    "export": ("segsynth.train.export", "export a checkpoint to ONNX or TorchScript"),
    "remove": ("segsynth.serve.remove", "remove backgrounds from files, in-process or through an endpoint"),
    "review": ("segsynth.review.command", "people pick, accept or compare masks in a web app (create, serve, export, close)"),
    "active": ("segsynth.active.job", "active learning: score the pool, select, auto-accept, harvest, run a round"),
}

log = logging.getLogger("segsynth")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="segsynth", description=__doc__.split("\n")[0])
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show everything in the terminal: debug logs, Ray's own logs and progress bars, tracebacks")
    sub = p.add_subparsers(dest="stage", metavar="<stage>")
    for name, (_, _, _, help_) in STAGES.items():
        sp = sub.add_parser(name, help=help_, description=f"segsynth {name}: {help_}")
        sp.add_argument("--config", help="stage config YAML (defaults of the config class when absent)")
        sp.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else an embedded local Ray)")
        sp.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
        sp.add_argument("--json", action="store_true", help="print the stage's whole summary as JSON on stdout")
        sp.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="show everything in the terminal (as `segsynth -v STAGE`)")
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
    console.setup(verbose=args.verbose)
    if args.stage is None:
        _parser().print_help()
        return 2
    try:
        if args.stage in COMMANDS:
            if getattr(args, "_import_error", None):
                raise SystemExit(f"segsynth {args.stage}: {args._import_error}; install with: pip install 'segsynth[all]'")
            if hasattr(args, "overrides"):  # a command that runs a config (review create, active ...): its storage: too
                apply_storage(getattr(args, "config", None), args.overrides)
            return int(importlib.import_module(args._command_module).main(args) or 0)
        config_module, cls_name, job_module, _ = STAGES[args.stage]
        cls = getattr(importlib.import_module(config_module), cls_name)
        apply_storage(args.config, args.overrides, cls)  # before the stage (or its Ray workers) touches s3://
        cfg = load_config(cls, args.config, args.overrides)
        if args.print_config:
            sys.stdout.write(dump_config(cfg))
            return 0
        with console.stage_logs(args.stage, getattr(cfg, "out", None)) as log_path:
            if log_path:
                log.debug("segsynth %s: full log in %s", args.stage, log_path)
            summary = importlib.import_module(job_module).run(cfg, address=args.address)
    except USER_ERRORS as e:
        sys.stderr.write(f"segsynth {args.stage}: error: {user_message(e)}\n")
        if args.verbose:
            raise
        return 2
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=2, default=str) + "\n")
    elif args.stage not in ("demo", "pipeline"):  # a chain logs each step's result line itself
        console.result(args.stage, summary)
    return 0


# errors that come from what the user gave (paths, config, ports), not from a bug: one line, exit 2
USER_ERRORS = (ConfigError, InputError, FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError)


def user_message(e: BaseException) -> str:
    """One line for a user error; a Ray task's copy of the error keeps the original's message."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException) and cause is not e:
        return user_message(cause)
    if isinstance(e, OSError) and e.filename:
        return (f"{e.filename}: {e.strerror or e}; check the path (relative paths start at the current folder) "
                "and its permissions")
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def entry() -> None:
    """The ``segsynth`` console script: :func:`main`, with Ray's native log lines kept off the
    terminal (they go to the stage's log file) unless ``--verbose``."""
    if not ({"-v", "--verbose"} & set(sys.argv[1:])):
        console.route_native_stderr()
    sys.exit(main())


if __name__ == "__main__":
    entry()
