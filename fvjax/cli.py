"""The ``fvjax`` command.

    fvjax render --config configs/tiny.toml [key=value ...]   render, write PNGs + gallery
    fvjax layers --model tiny [--size 64]                     list layers and shapes
    fvjax convert --model inceptionv1 IN.pth OUT [--force]    weights -> params checkpoint
    fvjax merge OUTPUT                                        join shard-K-of-N slices

Overrides use the config's keys, dotted for sections: ``steps=64 param.kind=pixel
units=[0,3]``. Bad input (an unknown key, model, layer or unit; a missing file) prints one
``fvjax: error: ...`` line and exits with status 2. The work itself is :func:`run`, importable.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import fvjax
from fvjax import checkpoint, outputs, shards, weights, zoo
from fvjax import config as config_lib
from fvjax.engine import device_mesh, plan_chunks
from fvjax.errors import ConfigError, FvjaxError, NonFiniteError
from fvjax.models import describe_layers
from fvjax.progress import Progress


def run(config: config_lib.Config, stream: TextIO | None = None) -> dict[str, Any]:
    """Render every layer of ``config`` and write its outputs; returns the manifest.

    Everything is checked (model, layers, units, sizes) before the first picture is rendered;
    the manifest and gallery are rewritten after each layer. Process ``K`` of ``N`` (the
    ``shard`` key, see :mod:`fvjax.shards`) renders its slice of the units into
    ``OUTPUT/shard-K-of-N``; in a ``distributed`` job process 0 then merges the slices.
    """
    start = time.perf_counter()
    stream = stream if stream is not None else sys.stderr
    if config.distributed:
        shards.initialize_distributed()  # before anything touches a JAX backend
    shard, n_shards = shards.resolve(config.shard)
    output = Path(config.output)
    if n_shards > 1:
        output = output / shards.shard_dir(shard, n_shards)
    data, sha = config_lib.resolve(config)
    job = config_lib.build_job(config)
    shapes = job.model.layer_shapes(config.size)
    _warn_if_other_job(output, sha, stream)
    out = outputs.RenderOutput(output, data, sha, model=job.model.name, started=start)
    setup_seconds = time.perf_counter() - start
    kwargs = job.render_kwargs()
    checkpoints = _checkpoint_root(config, data, output)
    mesh = device_mesh(config.devices or None)
    n_devices = 1 if mesh is None else mesh.size
    objectives = job.objectives
    if n_shards > 1:  # this process's slice of each layer (none when it has fewer units)
        objectives = {
            layer: objective.take(members)
            for layer, objective in objectives.items()
            if len(members := shards.positions(shard, n_shards, objective.batch_size))
        }
    total = sum(
        plan_chunks(o.batch_size * config.seeds, config.batch_size or None, n_devices)[1]
        for o in objectives.values()
    )
    # One bar over the whole job, every layer's chunks and steps.
    bar = Progress(total * config.steps, stream=stream, enabled=config.progress)
    for i, (layer, objective) in enumerate(objectives.items()):
        bar.label = f"[{i + 1}/{len(objectives)}] {layer}"
        if checkpoints is not None:
            kwargs["checkpoint_dir"] = checkpoints / outputs.slugify(layer)
            kwargs["checkpoint_every"] = config.checkpoint_every or None
        result = fvjax.render(job.model, objective, progress=bar, **kwargs)
        names = [job.model.unit_name(layer, int(u)) for u in result.units]
        out.add_layer(layer, result, shapes[layer], None if not any(names) else names)
    bar.close()
    manifest = out.finish(setup_seconds=setup_seconds)
    if checkpoints is not None:  # every output is written: the checkpoints have done their job
        shutil.rmtree(checkpoints, ignore_errors=True)
        if checkpoints.parent.is_dir() and not any(checkpoints.parent.iterdir()):
            checkpoints.parent.rmdir()
    if config.distributed and n_shards > 1:
        shards.wait_for_all("fvjax-render-done")
        if shard == 0:
            manifest = _merge_if_visible(Path(config.output), stream) or manifest
    return manifest


def _merge_if_visible(path: Path, stream: TextIO) -> dict[str, Any] | None:
    """Merge a distributed job's slices where process 0 sees them all (a shared filesystem)."""
    try:
        return shards.merge(path)
    except shards.ShardError as exc:
        stream.write(
            f"fvjax: note: slices not merged ({exc}); gather every shard-K-of-N directory "
            f"under {path} and run: fvjax merge {path}\n"
        )
        return None


def _checkpoint_root(config: config_lib.Config, data: dict[str, Any], output: Path) -> Path | None:
    """``OUTPUT/.checkpoints/<hash>``: the hash covers what changes the pictures, not where
    they are written or whether a progress bar shows, so such a change still resumes."""
    if not config.checkpoint:
        return None
    same_pictures = {k: v for k, v in data.items() if k not in _NOT_IN_PICTURES}
    return output / ".checkpoints" / config_lib.data_sha256(same_pictures)[:16]


_NOT_IN_PICTURES = ("output", "progress", "checkpoint", "checkpoint_every", "distributed")


def _warn_if_other_job(path: Path, sha: str, stream: TextIO) -> None:
    try:
        previous = outputs.read_manifest(path)
    except (OSError, ValueError):
        return
    if previous.get("config_sha256") != sha:
        stream.write(
            f"fvjax: note: {path} holds another job's outputs; files this job writes replace "
            "theirs, others stay but leave the manifest and gallery\n"
        )


def _render(args: argparse.Namespace) -> int:
    config = config_lib.load(args.config, args.overrides)
    manifest = run(config)
    out = Path(config.output).resolve()
    seconds = manifest["timings"]["total_seconds"]
    print(
        f"wrote {len(manifest['images'])} pictures of {len(manifest['layers'])} layer(s) "
        f"to {out} in {seconds:.1f} s"
    )
    print(f"gallery: {out / outputs.INDEX}")
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
    model = config_lib.build_model(config)
    print(describe_layers(model, config.size))
    return 0


def _convert(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    architecture = zoo.architecture(args.model)
    out = Path(args.out)
    if (out.exists() or out.is_symlink()) and not args.force:
        raise ConfigError(f"{out} exists; pass --force to replace it")
    state_dict = weights.load_state_dict(args.weights)
    like = architecture.param_shapes()
    params = weights.params_from_state_dict(state_dict, architecture.table(), like)
    record = {
        "model": args.model,
        "source": Path(args.weights).name,
        "source_sha256": _sha256(args.weights),
    }
    record = checkpoint.save_params(out, params, record, overwrite=args.force)
    print(
        f"converted {args.weights} to {out}: {args.model}, {record['parameters']:,} parameters, "
        f"{record['bytes'] / 1e6:.1f} MB in {time.perf_counter() - start:.1f} s"
    )
    return 0


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``fvjax`` command."""
    parser = argparse.ArgumentParser(
        prog="fvjax", description="Batched feature visualization for JAX models."
    )
    parser.add_argument("--version", action="version", version=f"fvjax {fvjax.__version__}")
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
    render.add_argument("--config", required=True, help="a .toml, .py or .yaml config file")
    render.add_argument("overrides", nargs="*", metavar="key=value", help="override config keys")
    render.set_defaults(run=_render)

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
        help="check a PyTorch-layout weights file once and write it as a params checkpoint",
        description="Check a state dict (.safetensors, .npz, or .pth through "
        "torch.load(weights_only=True)) against a zoo model's import table and write its Flax "
        "params as an orbax checkpoint directory, with record.json (model, source file and its "
        "SHA-256, versions). OUT goes wherever a weights file does: weights=OUT in a config, "
        "or zoo.load(NAME, weights=OUT).",
        epilog="example: fvjax convert --model inceptionv1 inception5h.pth inception5h.fvjax",
    )
    convert.add_argument("--model", required=True, help="zoo model that takes weights")
    convert.add_argument("weights", metavar="IN", help="state dict: .safetensors, .npz or .pth")
    convert.add_argument("out", metavar="OUT", help="checkpoint directory to write")
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
    print(f"gallery: {out / outputs.INDEX}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fvjax`` command; returns the exit status (0 ok, 1 failed run, 2 bad input)."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (FvjaxError, OSError) as exc:
        return _fail(exc, 2)
    except NonFiniteError as exc:
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
