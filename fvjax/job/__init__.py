"""Render jobs: what the ``fvjax`` command runs, around the two halves.

- :mod:`~fvjax.job.config`: the typed config (TOML, Python or YAML) and its overrides;
- :mod:`~fvjax.job.sections`: its sections (``[param]``, ``[natural]``, ``[checks]``, ...);
- :mod:`~fvjax.job.plan`: the job's plan, built once from the config and checked whole;
- :mod:`~fvjax.job.run`: the plan carried out, layer by layer (``fvjax.job.run.run(config)``);
- :mod:`~fvjax.job.outputs`: pictures, grids and ``manifest.json``;
- :mod:`~fvjax.job.gallery`: the HTML pages over them;
- :mod:`~fvjax.job.procedure`: preregistration, the ledger of runs, labels and verdicts;
- :mod:`~fvjax.job.shards`: one job over many processes, and their merge.
"""

from fvjax.job import config, gallery, outputs, plan, procedure, run, shards
from fvjax.job.config import Config, from_dict, load
from fvjax.job.plan import JobPlan, build_plan

__all__ = [
    "Config",
    "JobPlan",
    "build_plan",
    "config",
    "from_dict",
    "gallery",
    "load",
    "outputs",
    "plan",
    "procedure",
    "run",
    "shards",
]
