"""Sharding over devices, on 8 fake CPU devices (XLA must see the flag before JAX starts,
hence a subprocess)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fvjax

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    import fvjax
    from fvjax import objectives as O, transforms as T
    from fvjax.rendering.step import device_mesh
    assert len(jax.devices()) == 8, jax.devices()
    model = fvjax.from_fn(lambda x: {"rgb": x}, name="rgb")
    objective = O.channel("rgb", [0, 1, 2]) - 0.01 * O.total_variation()
    kwargs = dict(seeds=3, steps=6, size=16, transforms=T.standard(0.25))
    # 9 pictures: padded to 16 on 8 devices, 9 on 1; chunked 4+4+... on 4 devices.
    one = fvjax.render(model, objective, devices=1, **kwargs)
    eight = fvjax.render(model, objective, devices=8, **kwargs)
    again = fvjax.render(model, objective, devices=8, **kwargs)
    four = fvjax.render(model, objective, devices=4, batch_size=3, **kwargs)
    print(json.dumps({
        "mesh": device_mesh(8).devices.size,
        "max_diff_8": float(np.abs(one.images - eight.images).max()),
        "max_diff_4": float(np.abs(one.images - four.images).max()),
        "act_diff_8": float(np.abs(one.activations - eight.activations).max()),
        "bitwise_8": bool(np.array_equal(eight.images, again.images)),
        "rise": bool(np.all(eight.history[-1] > eight.history[0])),
    }))
    """
)


def _on_8_devices(tmp_path: Path, *sources: str) -> list[dict]:
    """Run ``sources`` one after the other in a fresh Python that sees 8 CPU devices; the
    line each printed last, as JSON."""
    script = tmp_path / "on_8_devices.py"
    script.write_text("\n".join(sources))
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=str(Path(fvjax.__file__).parents[1]),
    )
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.strip().splitlines()[-len(sources) :]]


@pytest.fixture(scope="module")
def on_8_devices(tmp_path_factory):
    """What the render and the dataset pass found on 8 devices, in one Python for both (in two
    the tests took 17 s, in one 12 s)."""
    render, dataset_pass = _on_8_devices(tmp_path_factory.mktemp("devices"), SCRIPT, PASS_SCRIPT)
    return {"render": render, "pass": dataset_pass}


@pytest.mark.slow
def test_sharded_over_8_devices_equals_one_device(on_8_devices):
    found = on_8_devices["render"]
    assert found["mesh"] == 8
    assert found["max_diff_8"] < 1e-5 and found["max_diff_4"] < 1e-5
    assert found["act_diff_8"] < 1e-5
    assert found["bitwise_8"] and found["rise"]


def test_asking_for_more_devices_than_exist_is_an_error(rgb_model):
    with pytest.raises(ValueError, match=r"devices=99 but \d+ local device"):
        fvjax.render(rgb_model, fvjax.objectives.channel("rgb", [0]), steps=1, size=8, devices=99)


PASS_SCRIPT = textwrap.dedent(
    """
    import json
    import jax, numpy as np
    from fvjax.checks.scan import dataset_pass
    from fvjax.data.datasets import world_dataset
    import fvjax
    assert len(jax.devices()) == 8, jax.devices()
    kernel = jax.random.normal(jax.random.key(1), (5, 5, 3, 6)) * 0.3
    def apply(params, x):
        pre = jax.lax.conv_general_dilated(
            x - 0.5, params, (4, 4), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return {"relu": jax.nn.relu(pre)}
    model = fvjax.from_fn(apply, params=kernel)
    data = world_dataset(seed=4, n=21, size=32)
    one = dataset_pass(model, data, ["relu"], batch_size=4, devices=1)["relu"]
    eight = dataset_pass(model, data, ["relu"], batch_size=8, devices=8)["relu"]
    fields = ("top_index", "bottom_index", "intersection", "union", "threshold", "score_counts")
    print(json.dumps({f: bool(np.array_equal(getattr(one, f), getattr(eight, f))) for f in fields}))
    """
)


@pytest.mark.slow
def test_the_dataset_pass_over_8_devices_equals_one_device(on_8_devices):
    same = on_8_devices["pass"]
    assert all(same.values()), same
