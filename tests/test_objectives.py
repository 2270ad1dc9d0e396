import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from fvjax import objectives as O
from fvjax.errors import UnitRangeError, UnknownLayerError

pytestmark = pytest.mark.usefixtures("strict_promotion")

SHAPES = {"conv": (6, 6, 8), "logits": (5,), "input": (12, 12, 3)}


def _acts(key):
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "conv": jax.random.normal(k1, (6, 6, 8)),
        "logits": jax.random.normal(k2, (5,)),
        "input": jax.random.uniform(k3, (12, 12, 3)),
    }


def _first(objective):
    """Member 0 of a batched objective, callable on one image's activations."""
    return objective.take(jnp.array([0])) if objective.batch_size else objective


@pytest.mark.parametrize(
    "objective",
    [
        O.channel("conv", [3]),
        O.neuron("conv", [2], x=1, y=4),
        O.neuron("conv", [2]),
        O.class_logit([4]),
        O.direction("conv", np.linspace(-1, 1, 8)),
        O.neuron_direction("conv", np.linspace(-1, 1, 8), x=0, y=0),
        O.layer("conv"),
        O.total_variation(),
        O.l1(),
        O.l2(),
        O.blur(),
        O.channel("conv", [1]) - 0.5 * O.total_variation() + 2.0 * O.l2(),
    ],
    ids=lambda o: o.label,
)
def test_gradients_match_finite_differences(objective):
    acts = _acts(jax.random.key(0))
    member = _first(objective)
    axes = member.vmap_axes()

    def value(acts):
        batched = jax.tree.map(lambda a: a[None], acts)
        return jax.vmap(lambda o, a: o(a), in_axes=(axes, 0))(member, batched)[0]

    assert np.isfinite(value(acts))
    check_grads(value, (acts,), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)


def test_values_are_what_they_say():
    acts = _acts(jax.random.key(1))

    def call(objective):
        if objective.batch_size is None:
            return float(objective(acts))
        axes = (objective.vmap_axes(), None)
        return float(jax.vmap(lambda o, a: o(a), in_axes=axes)(objective, acts)[0])

    np.testing.assert_allclose(call(O.channel("conv", [3])), acts["conv"][..., 3].mean(), 1e-6)
    np.testing.assert_allclose(call(O.neuron("conv", [2], x=1, y=4)), acts["conv"][4, 1, 2])
    np.testing.assert_allclose(call(O.neuron("conv", [2])), acts["conv"][3, 3, 2])
    np.testing.assert_allclose(call(O.class_logit([4])), acts["logits"][4])
    vec = np.arange(8.0, dtype=np.float32)
    np.testing.assert_allclose(
        call(O.direction("conv", vec)), (np.asarray(acts["conv"]) @ vec).mean(), rtol=1e-5
    )
    np.testing.assert_allclose(call(O.layer("conv")), (acts["conv"] ** 2).mean(), rtol=1e-6)


def test_algebra_keeps_each_weight_with_its_term():
    # Xplique's product compounds multipliers: a*m0 + b*m1 must stay a*m0 + b*m1.
    m0, m1 = O.channel("conv", [0, 1]), O.channel("conv", [2, 3])
    combined = 3.0 * m0 + 5.0 * m1
    np.testing.assert_allclose(combined.weights, [3.0, 5.0])
    assert len(combined.terms) == 2
    np.testing.assert_allclose((-(combined - m0) / 2).weights, [-1.5, -2.5, 0.5])
    acts = _acts(jax.random.key(2))
    out = jax.vmap(lambda o: o(acts), in_axes=(combined.vmap_axes(),))(combined)
    want = [
        3 * acts["conv"][..., 0].mean() + 5 * acts["conv"][..., 2].mean(),
        3 * acts["conv"][..., 1].mean() + 5 * acts["conv"][..., 3].mean(),
    ]
    np.testing.assert_allclose(out, want, rtol=1e-5)


def test_units_are_leaves_and_layers_are_static():
    a, b = O.channel("conv", [0, 1, 2]), O.channel("conv", [5, 6, 7])
    assert jax.tree.structure(a) == jax.tree.structure(b)
    assert jax.tree.structure(a) != jax.tree.structure(O.channel("other", [0, 1, 2]))


def test_take_repeats_members():
    objective = O.neuron("conv", [4, 7], x=[1, 2], y=[3, 4])
    taken = objective.take(np.array([0, 0, 1, 1]))
    assert taken.units.tolist() == [4, 4, 7, 7]
    assert taken.x.tolist() == [1, 1, 2, 2]


def test_unknown_layer_names_the_nearest():
    with pytest.raises(UnknownLayerError, match=r"'conv2'.*Did you mean 'conv'.*logits"):
        O.channel("conv2", [0]).validate(SHAPES)


def test_unit_out_of_range_gives_the_layer_size():
    with pytest.raises(UnitRangeError, match=r"unit 8 .* 'conv', which has 8 channels .*0\.\.7"):
        O.channel("conv", [0, 8]).validate(SHAPES)
    with pytest.raises(UnitRangeError, match="unit -1"):
        O.channel("conv", [-1]).validate(SHAPES)
    with pytest.raises(UnitRangeError, match="unit 5 .* 5 channels"):
        O.class_logit([5]).validate(SHAPES)
    with pytest.raises(UnitRangeError, match="x=6 .* 6x6"):
        O.neuron("conv", [0], x=6).validate(SHAPES)
    with pytest.raises(ValueError, match="4 entries but layer 'conv' has 8"):
        O.direction("conv", np.ones(4)).validate(SHAPES)
    with pytest.raises(UnitRangeError):  # inside a sum too
        (O.channel("conv", [9]) - O.total_variation()).validate(SHAPES)


def test_bad_constructions_are_refused():
    with pytest.raises(ValueError, match="different numbers of units"):
        O.channel("conv", [0, 1]) + O.channel("conv", [0, 1, 2])
    with pytest.raises(ValueError, match="non-empty sequence of integers"):
        O.channel("conv", [])
    with pytest.raises(ValueError, match="integers"):
        O.channel("conv", [0.5])
    with pytest.raises(TypeError, match="multiplied by numbers"):
        O.channel("conv", [0]) * O.channel("conv", [1])


def test_unit_ids_and_labels():
    objective = O.channel("conv", [4, 2]) - O.total_variation()
    assert objective.unit_ids().tolist() == [4, 2]
    assert objective.layer == "conv"
    assert objective.label == "sum(channel:conv,totalvariation:input)"
    assert O.layer("conv").batch_size is None
    assert O.stable_hash("channel:conv") == O.stable_hash("channel:conv")
