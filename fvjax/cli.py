"""The ``fvjax`` command.

    fvjax render --config configs/tiny.toml [key=value ...]   render, write PNGs + gallery
    fvjax check --config configs/tiny.toml [key=value ...]    the evidence beside a render
    fvjax preregister --config C [key=value ...] --out REG    fix a procedure before results
    fvjax render --registered REG                             run it: confirmatory, verdicts
    fvjax check --registered REG                              its checks and verdicts alone
    fvjax layers --model tiny [--size 64]                     list layers and shapes
    fvjax convert --model inceptionv1 IN.pth OUT [--force]    weights -> converted weights
    fvjax merge OUTPUT                                        join shard-K-of-N slices

Overrides use the config's keys, dotted for sections: ``steps=64 param.kind=pixel
units=[0,3]``. Bad input (an unknown key, model, layer or unit; a missing file) prints one
``fvjax: error: ...`` line and exits with status 2; a run that failed (NaN pictures, or every
picture degenerate: saturated, flat, its objective never rising) exits with status 1. A run
without ``--registered`` is exploratory and recorded in the output's ledger; one with it runs
the registered procedure exactly or is refused, naming the difference
(:mod:`fvjax.job.procedure`). This module parses arguments and maps errors to exit codes; the
work itself is :mod:`fvjax.job` (:func:`fvjax.job.run.run`, importable).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from fvjax.errors import ConfigError, FailedRunError, FvjaxError
from fvjax.files import FVJAX_VERSION, file_sha256
from fvjax.job import config as config_lib
from fvjax.job import procedure, shards
from fvjax.job.check import check
from fvjax.job.gallery import INDEX, LEDGER
from fvjax.job.plan import build_model
from fvjax.job.run import run
from fvjax.models import converted, weights, zoo
from fvjax.models.adapters import describe_layers


def _config(args: argparse.Namespace) -> tuple[config_lib.Config, procedure.Registration | None]:
    """The run's config, and its registration under ``--registered`` (which a config file and
    overrides may only restate)."""
    if args.registered is None:
        return config_lib.load(args.config, args.overrides), None
    registration = procedure.read_registration(args.registered)
    data = config_lib.read(args.config) if args.config else None
    return procedure.registered_config(registration, data, args.overrides), registration


def _say_procedure(manifest: dict) -> None:
    label = manifest.get("procedure") or {}
    if label.get("kind") == "confirmatory":
        found = [
            v["verdict"] for layer in label.get("verdicts", {}).values() for v in layer.values()
        ]
        verdicts = (
            f"; {found.count('supported')} of {len(found)} unit(s) supported" if found else ""
        )
        print(f"confirmatory: registered {label['registered']}{verdicts}")
    elif label:
        changed = label["differences"]
        since = "the first run here" if changed is None else f"{len(changed)} key(s) changed"
        print(
            f"exploratory: procedure {label['procedure']} of {label['procedures']} tried on this "
            f"model ({since}; ledger: {Path(manifest['config']['output']) / LEDGER})"
        )


def _render(args: argparse.Namespace) -> int:
    config, registration = _config(args)
    manifest = run(config, registration=registration)
    out = Path(config.output).resolve()
    seconds = manifest["timings"]["total_seconds"]
    print(
        f"wrote {len(manifest['images'])} pictures of {len(manifest['layers'])} layer(s) "
        f"to {out} in {seconds:.1f} s"
    )
    if "checks" in manifest:
        _say_checked(manifest)
    _say_procedure(manifest)
    print(f"gallery: {out / INDEX}")
    return 0


def _check(args: argparse.Namespace) -> int:
    config, registration = _config(args)
    manifest = check(config, registration=registration)
    _say_checked(manifest)
    _say_procedure(manifest)
    print(f"gallery: {Path(config.output).resolve() / INDEX}")
    return 0


def _say_checked(manifest: dict) -> None:
    checks = manifest["checks"]
    layers = checks["layers"].values()
    units = sum(len(layer["units"]) for layer in layers)
    flagged = sum(bool(u["flags"]) for layer in layers for u in layer["units"].values())
    print(
        f"checked {units} unit(s) of {len(checks['layers'])} layer(s) against "
        f"{checks['dataset']} in {checks['seconds']:.1f} s: {flagged} flagged; a card per unit"
    )


def _preregister(args: argparse.Namespace) -> int:
    config = config_lib.load(args.config, args.overrides)
    registration = procedure.preregister(config, args.out)
    body = registration.body
    units = sum(len(u) for u in body["units"].values())
    print(
        f"registered the procedure {body['config_sha256'][:12]} ({units} unit(s) x "
        f"{len(body['seeds'])} seed(s); checks: {', '.join(body['checks'])}) in {args.out}, "
        f"SHA-256 {registration.sha256[:16]}..."
    )
    print(f"run it: fvjax render --registered {args.out}")
    return 0


def _layers(args: argparse.Namespace) -> int:
    if args.model is None and args.config is None:
        raise ConfigError("give --model NAME or --config PATH")
    data = config_lib.read(args.config) if args.config else {}
    overrides = list(args.overrides)
    if args.model is not None:
        overrides.append(f"model={json.dumps(args.model)}")
    if args.size is not None:
        overrides.append(f"size={args.size}")
    config = config_lib.from_dict(data, overrides)
    model = build_model(config)
    print(describe_layers(model, config.size))
    return 0


def _convert(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    architecture = zoo.architecture(args.model, weights=True)
    out = Path(args.out)
    if (out.exists() or out.is_symlink()) and not args.force:
        raise ConfigError(f"{out} exists; pass --force to replace it")
    state_dict = weights.load_state_dict(args.weights)
    like = architecture.param_shapes()
    params = weights.params_from_state_dict(state_dict, architecture.table(), like)
    record = {
        "model": args.model,
        "source": Path(args.weights).name,
        "source_sha256": file_sha256(args.weights),
    }
    record = converted.save_params(out, params, record, overwrite=args.force)
    print(
        f"converted {args.weights} to {out}: {args.model}, {record['parameters']:,} parameters, "
        f"{record['bytes'] / 1e6:.1f} MB in {time.perf_counter() - start:.1f} s"
    )
    return 0


REGISTERED = (
    "run the procedure registered in REG (fvjax preregister), confirmatory; a config or "
    "override that changes it is refused"
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``fvjax`` command."""
    parser = argparse.ArgumentParser(
        prog="fvjax", description="Batched feature visualization for JAX models."
    )
    parser.add_argument("--version", action="version", version=f"fvjax {FVJAX_VERSION}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    render = commands.add_parser(
        "render",
        help="render the layers of a config and write PNGs, a manifest and an HTML gallery",
        description="Render every unit of the configured layers; write PNGs, grids, "
        "manifest.json and a static HTML gallery to the config's output directory.",
        epilog="config keys and defaults:\n  "
        + config_lib.describe().replace("\n", "\n  ")
        + "\n\nexample: fvjax render --config configs/tiny.toml steps=32 'units=[0, 1]'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    render.add_argument("--config", help="a .toml, .py or .yaml config file")
    render.add_argument("--registered", metavar="REG", help=REGISTERED)
    render.add_argument("overrides", nargs="*", metavar="key=value", help="override config keys")
    render.set_defaults(run=_render)

    checker = commands.add_parser(
        "check",
        help="check a finished render: dataset examples, dissection, synthetic vs natural",
        description="Run the config's [checks] over the pictures its render left in the "
        "output directory: one pass over the dataset, then a card per unit with its natural "
        "examples, concepts, scale, price of the priors and path check; manifest.json and "
        "the gallery are updated in place.",
        epilog="example: fvjax check --config configs/default.toml checks.images=500",
    )
    checker.add_argument("--config", help="the config of the render to check")
    checker.add_argument("--registered", metavar="REG", help=REGISTERED)
    checker.add_argument("overrides", nargs="*", metavar="key=value", help="override config keys")
    checker.set_defaults(run=_check)

    register = commands.add_parser(
        "preregister",
        help="fix a procedure before its results: config, weights, units, checks, thresholds",
        description="Freeze the resolved config and its hash, the weights' hash, the units and "
        "seeds, the checks and the thresholds of each unit's verdict, the versions and the "
        "time in REG, before any result of that procedure exists (refused when the output "
        "holds some). `fvjax render --registered REG` then runs exactly that procedure.",
        epilog="example: fvjax preregister --config configs/tiny.toml --out tiny.reg.json",
    )
    register.add_argument("--config", required=True, help="a .toml, .py or .yaml config file")
    register.add_argument("--out", required=True, metavar="REG", help="registration to write")
    register.add_argument("overrides", nargs="*", metavar="key=value", help="override config keys")
    register.set_defaults(run=_preregister)

    layers = commands.add_parser(
        "layers",
        help="list a model's layers and activation shapes",
        description="List a model's layers with the shape of one image's activations.",
    )
    layers.add_argument("--model", help="built-in model name or 'package.module:factory'")
    layers.add_argument("--config", help="take the model (and size) from this config")
    layers.add_argument("--size", type=int, help="image size (default: the config's, or 128)")
    layers.add_argument("overrides", nargs="*", metavar="key=value", help="override config keys")
    layers.set_defaults(run=_layers)

    convert = commands.add_parser(
        "convert",
        help="check a PyTorch-layout weights file once and write it as converted weights",
        description="Check a state dict (.safetensors, .npz, or .pth through "
        "torch.load(weights_only=True)) against a zoo model's import table and write its Flax "
        "params as a converted-weights directory (an orbax tree), with record.json (model, "
        "source file and its SHA-256, versions). OUT goes wherever a weights file does: "
        "weights=OUT in a config, or zoo.load(NAME, weights=OUT).",
        epilog="example: fvjax convert --model inceptionv1 inception5h.pth inception5h.fvjax",
    )
    convert.add_argument("--model", required=True, help="zoo model that takes weights")
    convert.add_argument("weights", metavar="IN", help="state dict: .safetensors, .npz or .pth")
    convert.add_argument("out", metavar="OUT", help="converted-weights directory to write")
    convert.add_argument("--force", action="store_true", help="replace OUT if it exists")
    convert.set_defaults(run=_convert)

    merge = commands.add_parser(
        "merge",
        help="join the shard-K-of-N slices of a multi-process render into one gallery",
        description="Join OUTPUT/shard-K-of-N (all N slices of one job, each finished) into "
        "one manifest, grids and gallery at OUTPUT, as a one-process render writes them.",
        epilog="example: fvjax merge fvjax-out/inceptionv1",
    )
    merge.add_argument("output", metavar="OUTPUT", help="the job's output directory")
    merge.set_defaults(run=_merge)
    return parser


def _merge(args: argparse.Namespace) -> int:
    manifest = shards.merge(args.output)
    out = Path(args.output).resolve()
    print(
        f"merged {len(manifest['shards'])} slices: {len(manifest['images'])} pictures of "
        f"{len(manifest['layers'])} layer(s) in {out}"
    )
    print(f"gallery: {out / INDEX}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fvjax`` command; returns the exit status (0 ok, 1 failed run, 2 bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "registered", "") is None and args.config is None:
        parser.error(
            f"{args.command} needs --config C (to explore) or --registered REG (to confirm)"
        )
    try:
        return args.run(args)
    except (FvjaxError, OSError) as exc:
        return _fail(exc, 2)
    except FailedRunError as exc:  # NaN pictures, or none useful
        return _fail(exc, 1)
    except KeyboardInterrupt:
        print("\nfvjax: interrupted", file=sys.stderr)
        return 130


def _fail(exc: BaseException, status: int) -> int:
    message = " ".join(str(exc).split()) or type(exc).__name__
    print(f"fvjax: error: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
