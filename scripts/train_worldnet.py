"""Train WorldNet on the procedural world; write ``fvjax/models/zoo/worldnet.npz`` and ``.json``.

    python scripts/train_worldnet.py                       # the shipped weights (~8 min, 2 CPUs)
    python scripts/train_worldnet.py --steps 200 --out /tmp/worldnet   # a quick try

Everything is seeded: the training images are ``world.generate(train_seed, ...)``, the batch
order comes from ``seed``, the held-out images from ``heldout_seed`` (a different world
stream), so a rerun on the same software gives the same weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

# Run from a checkout without installing: the package sits next to this folder.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fvjax import data, models  # noqa: E402
from fvjax import world as world_lib  # noqa: E402
from fvjax.models.zoo import worldnet  # noqa: E402

#: Images at the start of the held-out stream that the tests re-score (keeps them fast).
CHECK_IMAGES = 256


@dataclasses.dataclass(frozen=True)
class Config:
    seed: int = 0  # parameter init and batch order
    train_seed: int = 0  # world stream of the training images
    heldout_seed: int = 1  # world stream of the held-out images
    size: int = worldnet.WORLDNET_SIZE
    train_images: int = 48_000
    heldout_images: int = 2_000
    batch_size: int = 128
    steps: int = 3_000
    learning_rate: float = 1e-2
    warmup_steps: int = 100
    weight_decay: float = 1e-4
    features: tuple[int, ...] = (16, 32, 64, 128)


def make_optimizer(config: Config) -> optax.GradientTransformation:
    """AdamW with a linear warmup and a cosine decay to zero."""
    warmup = min(config.warmup_steps, config.steps // 2)  # short test runs still decay
    schedule = optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, warmup, config.steps)
    return optax.adamw(schedule, weight_decay=config.weight_decay)


def make_train_step(module: worldnet.WorldNet, optimizer: optax.GradientTransformation):
    """``step(params, opt_state, images, labels) -> (params, opt_state, loss)``, jitted.

    The params are arguments, not closure constants: XLA would otherwise fold them into the
    program and compile far more slowly.
    """

    def loss_fn(params: Any, images: jax.Array, labels: jax.Array) -> jax.Array:
        logits = module.apply({"params": params}, images)
        return optax.sigmoid_binary_cross_entropy(logits, labels).mean()

    @jax.jit
    def step(params, opt_state, images, labels):
        loss, grads = jax.value_and_grad(loss_fn)(params, images, labels)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def training_data(config: Config) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, H, W, 3), labels (N, concepts) float32)`` from the training stream."""
    images = np.empty((config.train_images, config.size, config.size, 3), np.float32)
    labels = np.empty((config.train_images, len(world_lib.CONCEPTS)), np.float32)
    offset = 0
    for batch in data.world_batches(config.train_seed, config.size, 4096, config.train_images):
        images[offset : offset + len(batch.images)] = batch.images
        labels[offset : offset + len(batch.images)] = batch.labels
        offset += len(batch.images)
    return images, labels


def train(
    config: Config, images: np.ndarray, labels: np.ndarray, log=print
) -> tuple[worldnet.WorldNet, dict[str, Any]]:
    """The trained ``(module, variables)``."""
    module = worldnet.WorldNet(features=config.features)
    key = jax.random.key(config.seed)
    params = module.init(key, jnp.zeros((1, config.size, config.size, 3)))["params"]
    optimizer = make_optimizer(config)
    opt_state = optimizer.init(params)
    step = make_train_step(module, optimizer)

    rng = np.random.default_rng(config.seed)
    order = np.zeros(0, int)
    start = time.perf_counter()
    losses = []
    for i in range(config.steps):
        if len(order) < config.batch_size:  # a fresh shuffle per epoch
            order = np.concatenate([order, rng.permutation(len(images))])
        batch, order = order[: config.batch_size], order[config.batch_size :]
        params, opt_state, loss = step(params, opt_state, images[batch], labels[batch])
        losses.append(loss)
        if (i + 1) % 100 == 0 or i + 1 == config.steps:
            elapsed = time.perf_counter() - start
            mean_loss = float(np.mean(jax.device_get(losses)))
            losses = []
            log(
                f"step {i + 1:5d}/{config.steps}  loss {mean_loss:.4f}  "
                f"{(i + 1) * config.batch_size / elapsed:.0f} img/s  {elapsed:.0f}s"
            )
    return module, {"params": params}


def evaluate(module, variables, config: Config) -> dict[str, Any]:
    """Held-out reports: all ``heldout_images``, and the first ``CHECK_IMAGES`` of them."""
    heldout = world_lib.generate(config.heldout_seed, config.heldout_images, config.size)
    probabilities = worldnet.predict(module, variables, heldout.images)
    return {
        "heldout": worldnet.accuracy_report(probabilities, heldout.labels),
        "heldout_check": worldnet.accuracy_report(
            probabilities[:CHECK_IMAGES], heldout.labels[:CHECK_IMAGES]
        ),
    }


def write(out: Path, variables, info: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "worldnet.npz", **worldnet.flatten_variables(variables))
    (out / "worldnet.json").write_text(json.dumps(info, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=worldnet.WEIGHTS_PATH.parent)
    for field in dataclasses.fields(Config):
        if isinstance(field.default, int | float):
            flag = "--" + field.name.replace("_", "-")
            parser.add_argument(flag, type=type(field.default), default=field.default)
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k != "out"}
    config = Config(**overrides)
    print(f"config: {config}")

    seconds = {}
    start = time.perf_counter()
    print(f"generating {config.train_images} training images of {config.size}x{config.size}")
    images, labels = training_data(config)
    seconds["generate_data"] = time.perf_counter() - start
    print(f"  done in {seconds['generate_data']:.0f}s")
    module, variables = train(config, images, labels)
    seconds["train"] = time.perf_counter() - start - seconds["generate_data"]
    reports = evaluate(module, variables, config)
    seconds["total"] = time.perf_counter() - start
    heldout = reports["heldout"]
    print(
        f"held-out ({heldout['n_images']} images, seed {config.heldout_seed}): "
        f"mean per-concept accuracy {heldout['mean_accuracy']:.4f}, "
        f"balanced {heldout['mean_balanced_accuracy']:.4f}, "
        f"exact match {heldout['exact_match']:.4f}"
    )
    for group, accuracy in heldout["per_group"].items():
        print(f"  {group:<12} {accuracy:.4f}")

    shapes = models.from_linen(module, variables).layer_shapes(config.size)
    n_params = sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(variables))
    info = {
        "name": "worldnet",
        "concepts": list(world_lib.CONCEPTS),
        "output": "one logit per concept (independent sigmoids), in the order of 'concepts'",
        "input": {
            "layout": "NHWC",
            "range": [0.0, 1.0],
            "size": [config.size, config.size],
            "normalisation": {"mean": worldnet.WORLDNET_MEAN, "std": worldnet.WORLDNET_STD},
        },
        "model": {
            "features": list(config.features),
            "n_params": n_params,
            "dtype": "float32",
            "layer_shapes": {layer: list(shape) for layer, shape in shapes.items()},
        },
        "config": dataclasses.asdict(config),
        "seconds": {name: round(value, 1) for name, value in seconds.items()},
        "machine": {
            "cpu_cores": os.cpu_count(),
            "architecture": platform.machine(),
            "jax_backend": jax.default_backend(),
        },
        **reports,
        "check_images": CHECK_IMAGES,
        "date": datetime.date.today().isoformat(),
        "versions": {
            "python": platform.python_version(),
            "jax": jax.__version__,
            "flax": flax.__version__,
            "optax": optax.__version__,
            "numpy": np.__version__,
        },
        "command": " ".join(["python", "scripts/train_worldnet.py", *(argv or sys.argv[1:])]),
    }
    write(args.out, variables, info)
    print(f"wrote {args.out / 'worldnet.npz'} and {args.out / 'worldnet.json'}")


if __name__ == "__main__":
    main()
