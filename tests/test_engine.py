import dataclasses
import io

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from test_models import LinenNet, NnxNet

import fvjax
from fvjax import objectives as O
from fvjax import param as P
from fvjax import transforms as T
from fvjax.errors import ImageSizeError, NonFiniteError, UnitRangeError
from fvjax.progress import Progress
from fvjax.rendering.engine import plan_render
from fvjax.rendering.step import trace_count

CHEAP = T.compose(T.pad(2), T.jitter(4))  # random, but quick to compile
FAST = dict(steps=12, size=16, transforms=T.identity(), param=P.pixel())


def test_objectives_rise_during_rendering(rgb_model):
    result = fvjax.render(rgb_model, O.channel("rgb", [0, 1, 2]), seeds=2, **FAST)
    assert result.images.shape == (3, 2, 16, 16, 3)
    assert result.history.shape == (12, 3, 2)
    assert np.all(result.history[-1] > result.history[0] + 0.1)
    assert np.all(result.activations > 0.6)
    # Unit k's picture is dominated by colour k (no decorrelation here).
    means = result.images.mean(axis=(1, 2, 3))
    assert np.array_equal(means.argmax(axis=1), [0, 1, 2])
    np.testing.assert_allclose(
        result.activations, means[np.arange(3), np.arange(3)][:, None].repeat(2, 1), atol=0.02
    )


def test_new_units_do_not_retrace(rgb_model):
    kwargs = dict(seeds=2, steps=3, size=16)  # default fourier + standard transforms + adam
    fvjax.render(rgb_model, O.channel("rgb", [0, 1]), **kwargs)
    before = trace_count()
    fvjax.render(rgb_model, O.channel("rgb", [2, 0]), **kwargs)
    fvjax.render(rgb_model, O.channel("rgb", [1, 1]), param=P.fourier(), **kwargs)
    assert trace_count() == before


def test_a_laplacian_pyramid_renders_new_units_without_a_retrace(rgb_model):
    kwargs = dict(seeds=2, steps=2, size=16, param=P.laplacian(levels=3), transforms=CHEAP)
    first = fvjax.render(rgb_model, O.channel("rgb", [0, 1]), **kwargs)
    before = trace_count()
    second = fvjax.render(rgb_model, O.channel("rgb", [2, 2]), **kwargs)
    assert trace_count() == before
    assert first.images.shape == second.images.shape == (2, 2, 16, 16, 3)


def test_new_weights_do_not_retrace_because_they_are_arguments():
    model = fvjax.from_fn(lambda w, x: {"proj": x @ w}, params=jnp.eye(3))
    objective = O.channel("proj", [0])
    first = fvjax.render(model, objective, **FAST)
    before = trace_count()
    swapped = dataclasses.replace(model, params=jnp.eye(3)[:, ::-1])  # channel 0 reads blue
    second = fvjax.render(swapped, objective, **FAST)
    assert trace_count() == before
    assert first.images[0, 0, ..., 0].mean() > 0.6 and second.images[0, 0, ..., 2].mean() > 0.6


def test_same_inputs_same_pictures_bit_for_bit(rgb_model):
    kwargs = dict(seeds=[3, 7], steps=5, size=20)
    a = fvjax.render(rgb_model, O.channel("rgb", [0, 2]), **kwargs)
    b = fvjax.render(rgb_model, O.channel("rgb", [0, 2]), **kwargs)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.activations, b.activations)
    assert not np.array_equal(a.images[0, 0], a.images[0, 1])  # seeds differ


def test_a_picture_does_not_depend_on_its_batch_or_chunk(rgb_model):
    kwargs = dict(seeds=[0, 1], steps=6, size=20, transforms=CHEAP)
    whole = fvjax.render(rgb_model, O.channel("rgb", [0, 1, 2]), **kwargs)
    chunked = fvjax.render(rgb_model, O.channel("rgb", [0, 1, 2]), batch_size=4, **kwargs)
    reordered = fvjax.render(rgb_model, O.channel("rgb", [2, 0]), **kwargs)
    np.testing.assert_allclose(chunked.images, whole.images, atol=1e-5)
    np.testing.assert_allclose(chunked.activations, whole.activations, atol=1e-5)
    np.testing.assert_allclose(reordered.images[0], whole.images[2], atol=1e-5)
    np.testing.assert_allclose(reordered.images[1], whole.images[0], atol=1e-5)


def test_scan_and_host_loop_agree(rgb_model):
    kwargs = dict(seeds=2, steps=6, size=16, transforms=CHEAP)
    loop = fvjax.render(rgb_model, O.channel("rgb", [0, 1]), steps_per_call=1, **kwargs)
    scan = fvjax.render(rgb_model, O.channel("rgb", [0, 1]), steps_per_call=4, **kwargs)
    np.testing.assert_allclose(scan.images, loop.images, atol=1e-5)
    np.testing.assert_allclose(scan.history, loop.history, atol=1e-5)


def test_any_optax_optimizer(rgb_model):
    chained = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(50.0))
    result = fvjax.render(rgb_model, O.channel("rgb", [1]), optimizer=chained, **FAST)
    assert result.history[-1, 0, 0] > result.history[0, 0, 0] + 0.1


def test_non_finite_values_stop_with_step_and_units():
    model = fvjax.from_fn(lambda x: {"log": jnp.log(x - 0.5)})  # NaN below mid-grey
    with pytest.raises(NonFiniteError, match=r"at step 0 for unit 0 seed 0, unit 0 seed 1"):
        fvjax.render(model, O.channel("log", [0]), seeds=2, **FAST)


def test_bad_units_fail_on_the_host_before_tracing(rgb_model):
    before = trace_count()
    with pytest.raises(UnitRangeError, match="unit 3 is out of range for layer 'rgb'"):
        fvjax.render(rgb_model, O.channel("rgb", [0, 3]), **FAST)
    assert trace_count() == before


def test_images_too_small_for_the_transforms(rgb_model):
    with pytest.raises(ImageSizeError, match="8x8 is too small for the transforms"):
        fvjax.render(
            rgb_model,
            O.channel("rgb", [0]),
            size=8,
            steps=1,
            transforms=T.compose(T.jitter(6), T.jitter(4)),
        )


@pytest.mark.parametrize("kind", ["linen", "nnx"])
def test_flax_models_render(kind):
    if kind == "linen":
        module = LinenNet()
        variables = module.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
        model = fvjax.from_linen(module, variables)
        objective = O.channel("block2", [0, 1]) + 0.5 * O.class_logit([0, 1])
    else:
        model = fvjax.from_nnx(NnxNet(nnx.Rngs(0)))
        objective = O.channel("stages/0", [0, 1]) + 0.5 * O.class_logit([0, 1])
    result = fvjax.render(model, objective, seeds=2, steps=10, size=16, transforms=T.standard(0.25))
    assert result.images.shape == (2, 2, 16, 16, 3)
    assert np.all(result.history[-1] > result.history[0])


def test_render_layer_renders_every_channel(rgb_model):
    result = fvjax.render_layer(rgb_model, "rgb", **FAST)
    assert result.units.tolist() == [0, 1, 2]
    assert result.layer == "rgb"
    neurons = fvjax.render_layer(rgb_model, "rgb", units=[1], kind="neuron", **FAST)
    assert neurons.label == "neuron:rgb"
    with pytest.raises(ValueError, match="kind must be one of"):
        fvjax.render_layer(rgb_model, "rgb", kind="pixel", **FAST)


def test_progress_is_reported(rgb_model):
    stream = io.StringIO()
    bar = Progress(total=24, label="job", stream=stream)
    fvjax.render(rgb_model, O.channel("rgb", [0, 1, 2]), batch_size=2, progress=bar, **FAST)
    bar.close()
    assert "100.0%" in stream.getvalue() and "chunk 2/2" in stream.getvalue()


def test_bfloat16_model_and_remat_render_close_to_float32():
    model = fvjax.from_fn(lambda w, x: {"proj": x @ w}, params=jnp.eye(3) * 2.0)
    objective = O.channel("proj", [0, 2])
    base = fvjax.render(model, objective, seeds=2, **FAST)
    bf16 = fvjax.render(model, objective, seeds=2, model_dtype="bfloat16", **FAST)
    remat = fvjax.render(model, objective, seeds=2, remat="convs", **FAST)
    assert bf16.images.dtype == np.float32
    assert not np.array_equal(bf16.history, base.history)  # the model really ran in bf16
    np.testing.assert_allclose(bf16.activations, base.activations, atol=0.05)
    np.testing.assert_allclose(remat.images, base.images, atol=1e-6)
    with pytest.raises(ValueError, match="model_dtype must be"):
        fvjax.render(model, objective, model_dtype="float16", **FAST)
    # A float32 constant inside the model would quietly run it in float32: said, not hidden.
    promoting = fvjax.from_fn(lambda w, x: {"proj": x @ w + jnp.ones(3)}, params=jnp.eye(3))
    with pytest.warns(UserWarning, match="layers proj come out as float32"):
        fvjax.render(promoting, objective, model_dtype="bfloat16", **FAST)


def test_pictures_start_from_their_start_images(rgb_model):
    starts = np.random.default_rng(0).uniform(0.1, 0.9, (2, 2, 16, 16, 3)).astype(np.float32)
    objective = O.channel("rgb", [0, 1])
    kwargs = dict(seeds=2, size=16, transforms=T.identity())
    for p in (P.pixel(), P.fourier()):
        still = fvjax.render(rgb_model, objective, steps=1, param=p, starts=starts,
                             optimizer=optax.sgd(0.0), **kwargs)  # fmt: skip
        # Each picture is its own start, plus its seed's small draw (init_std 0.01 raw).
        np.testing.assert_allclose(still.images, starts, atol=0.02)
        moved = fvjax.render(rgb_model, objective, steps=8, param=p, starts=starts, **kwargs)
        assert (moved.activations > still.activations).all()
    plain = plan_render(rgb_model, objective, **kwargs)
    started = plan_render(rgb_model, objective, starts=starts, **kwargs)
    assert "starts" in started.identity() and "starts" not in plain.identity()


def test_bad_starts_name_what_is_wrong(rgb_model):
    objective, kwargs = O.channel("rgb", [0]), dict(seeds=2, size=8, steps=1)
    with pytest.raises(fvjax.errors.ArgumentError, match=r"\(1, 2, 8, 8, 3\)"):
        plan_render(rgb_model, objective, starts=np.zeros((1, 1, 8, 8, 3)), **kwargs)
    with pytest.raises(fvjax.errors.ArgumentError, match=r"\[0, 1\]"):
        plan_render(rgb_model, objective, starts=np.full((1, 2, 8, 8, 3), 2.0), **kwargs)
    custom = P.Parameterization(init=lambda k, s: jnp.zeros((*s, 3)), to_image=lambda r, s: r)
    with pytest.raises(fvjax.errors.ArgumentError, match="from_image"):
        plan_render(rgb_model, objective, param=custom, starts=np.zeros((1, 2, 8, 8, 3)),
                          **kwargs)  # fmt: skip


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_is_on_by_default_where_stderr_is_a_terminal(rgb_model, monkeypatch, terminal):
    class Stderr(io.StringIO):
        def isatty(self):
            return terminal

    stderr = Stderr()
    monkeypatch.setattr("sys.stderr", stderr)
    fvjax.render(rgb_model, O.channel("rgb", [0, 1]), **FAST)
    shown = stderr.getvalue()
    if terminal:  # what is rendered, then how far
        assert "channel:rgb: 2 pictures, 12 steps, 16x16 px" in shown and "100.0%" in shown
    else:
        assert shown == ""


def test_a_laplacian_pyramid_renders_a_layer_in_one_program(rgb_model):
    kwargs = dict(seeds=2, steps=6, size=16, param=P.laplacian(levels=3), transforms=CHEAP)
    first = fvjax.render(rgb_model, O.channel("rgb", [0, 1]), **kwargs)
    before = trace_count()
    again = fvjax.render(rgb_model, O.channel("rgb", [1, 2]), **kwargs)
    assert trace_count() == before  # new units, no retrace
    assert (first.history[-1] > first.history[0]).all() and again.images.shape[:2] == (2, 2)
