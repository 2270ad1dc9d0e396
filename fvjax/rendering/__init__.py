"""Making pictures: the first half of fvjax, in the order the data flows.

- :mod:`~fvjax.rendering.objectives`: what a picture maximizes (pure, composable pytrees);
- :mod:`~fvjax.rendering.param`: how a picture is parameterized (pixels, Fourier);
- :mod:`~fvjax.rendering.maco`: MACO's phase-only pictures over a dataset's spectrum;
- :mod:`~fvjax.rendering.cppn`: pictures drawn by a small network of each pixel's position;
- :mod:`~fvjax.rendering.alpha`: transparent (RGBA) pictures over random backgrounds;
- :mod:`~fvjax.rendering.transforms`: the per-image robustness transforms;
- :mod:`~fvjax.rendering.redirect`: redirected ReLU gradients, for any JAX model;
- :mod:`~fvjax.rendering.seeds`: what ties a unit's seeds together (diversity, facet guides);
- :mod:`~fvjax.rendering.step`: the compiled optimization step over a batch of pictures;
- :mod:`~fvjax.rendering.engine`: chunks of that program, planned then run (:func:`render`);
- :mod:`~fvjax.rendering.inversion`: pictures held to natural images (feature inversion,
  caricatures, feature accentuation);
- :mod:`~fvjax.rendering.resume`: the checkpoints a killed render resumes from;
- :mod:`~fvjax.rendering.cost`: what a step costs, compiled but not run (for benchmarks);
- :mod:`~fvjax.rendering.determinism`: the same pictures on every run, GPUs included.
"""

from fvjax.rendering import (
    alpha,
    cppn,
    determinism,
    inversion,
    maco,
    objectives,
    param,
    redirect,
    seeds,
    transforms,
)
from fvjax.rendering.engine import (
    RenderPlan,
    RenderResult,
    plan_render,
    render,
    render_layer,
    run_plan,
)

__all__ = [
    "RenderPlan",
    "RenderResult",
    "alpha",
    "cppn",
    "determinism",
    "inversion",
    "maco",
    "objectives",
    "param",
    "plan_render",
    "redirect",
    "render",
    "render_layer",
    "run_plan",
    "seeds",
    "transforms",
]
