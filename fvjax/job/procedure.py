"""A procedure fixed before its results: preregistration, the ledger of runs, verdicts.

Feature visualization is tuned by looking, and pictures tuned until they look right cannot
confirm a hypothesis about a unit (the garden of forking paths: Gelman & Loken). Confirmation
needs the procedure and its criteria fixed before any result is seen:

- :func:`preregister` (``fvjax preregister --config C --out REG``) freezes the resolved config
  and its hash, the weights' hash (:func:`weights_sha256`), the units and seeds, the checks
  that run and the thresholds of each unit's verdict (:func:`thresholds`), the versions and
  the time. It refuses when the output already holds results of that procedure (the same
  keys of roles ``pictures`` and ``checks``: :data:`PROCEDURE`).
- A run under a registration is **confirmatory**. :func:`read_registration` refuses a
  registration edited after it was written, :func:`registered_config` any other config (a
  key, an override), :func:`start_run` other weights or units; the registration is copied
  into the output, and :func:`verdicts` judges each unit by the registered thresholds only.
- Every run is recorded in ``OUTPUT/ledger.jsonl`` before it starts (:func:`start_run`) and
  marked finished when it ends (:func:`finish_run`), so a killed run still counts, and what
  it overwrote is named. A run without a registration is **exploratory**: its gallery says
  which of the procedures tried on the model it is, and how its config differs from the
  previous run's.

Files::

    REG                       {"format", "sha256": SHA-256 of the body's canonical JSON, "body"}
    OUTPUT/registration.json  a confirmatory run's copy of REG, byte for byte
    OUTPUT/ledger.jsonl       one JSON object per run, oldest first; rewritten whole and
                              atomically, so a kill leaves the old ledger or the new one

>>> import tempfile
>>> from fvjax.job.config import Config
>>> folder = Path(tempfile.mkdtemp())
>>> config = Config(layers=["block2"], units=[0, 1], steps=2, size=16, output=str(folder / "o"))
>>> registration = preregister(config, folder / "reg.json")
>>> registration.body["units"], registration.body["thresholds"]["far_above"]
({'block2': [0, 1]}, 30.0)
>>> [(entry["run"], entry["command"]) for entry in read_ledger(folder / "o")]
[(1, 'preregister')]
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from fvjax.checks.evidence import flags_for
from fvjax.checks.paths import MIN_RIVALS, RIVAL_LIMIT
from fvjax.errors import ProcedureError
from fvjax.files import atomic_write, data_sha256, exists, versions
from fvjax.job import config as config_lib
from fvjax.job.gallery import LEDGER, REGISTRATION
from fvjax.job.outputs import read_manifest
from fvjax.job.plan import build_objectives, build_plan
from fvjax.rendering.inversion import IMAGE_OBJECTIVES
from fvjax.rendering.objectives import LAYER_OBJECTIVES

FORMAT = "fvjax-registration/1"
#: The key roles (:data:`fvjax.job.keys.ROLES`) a procedure is made of: what decides the
#: pictures and what the checks do; not where the outputs go or which process renders what.
PROCEDURE = ("pictures", "checks")
VERDICT_RULE = (
    "supported when every registered criterion holds: with dissection, a detector of its best "
    "concept (IoU above detector_iou); some picture's reach at least reach_min; not every "
    "picture's reach above far_above; with the path check, not off-path"
)


class Registration(NamedTuple):
    """A registration read back and verified: its file, its body, the body's hash, the text."""

    path: Path
    body: dict[str, Any]
    sha256: str
    text: str


class Run(NamedTuple):
    """A run in the ledger of ``root``: its number there (``None``: not recorded, a process
    other than 0 of a sharded job) and the label its manifest carries as ``procedure``."""

    root: Path
    number: int | None
    label: dict[str, Any]


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# -- what a procedure is ------------------------------------------------------------------------


def weights_sha256(params: Any) -> str:
    """SHA-256 of a model's params tree: every leaf's path, dtype, shape and bytes. The one
    definition of "the same weights", whether they came from a file, a converted directory,
    the zoo's own file or a seeded initialization.

    >>> a = {"conv": {"kernel": np.ones((3, 3), np.float32)}}
    >>> weights_sha256(a) == weights_sha256({"conv": {"kernel": np.ones((3, 3), np.float32)}})
    True
    >>> weights_sha256(a) == weights_sha256({"conv": {"kernel": np.zeros((3, 3), np.float32)}})
    False
    """
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}|{array.dtype.name}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def thresholds(config: config_lib.Config) -> dict[str, float | int | None]:
    """What decides each unit's verdict (:func:`unit_verdict`): the config's ``[checks]``
    thresholds, and the path check's own constants (``None`` where that check does not run).

    >>> thresholds(config_lib.Config())["detector_iou"]
    0.04
    """
    c = config.checks
    return {
        "detector_iou": c.detector_iou if c.dissect else None,
        "reach_min": c.reach_min,
        "far_above": c.far_above,
        "off_path_rival": RIVAL_LIMIT if c.path else None,
        "min_rivals": MIN_RIVALS if c.path else None,
    }


def checks_run(config: config_lib.Config) -> list[str]:
    """The checks a procedure runs (with the render when ``checks.enabled``, else by ``fvjax
    check``).

    >>> checks_run(config_lib.Config())
    ['examples', 'reach', 'dissection', 'price of the priors', 'path']
    """
    c, names = config.checks, ["examples", "reach"]
    names += ["dissection"] if c.dissect else []
    names += ["price of the priors"] if c.plain else []
    names += ["path"] if c.path else []
    return names + (["facets"] if config.facets.enabled else [])


def units_of(config: config_lib.Config, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, list]:
    """``{layer: units}`` a config renders, ``"all"`` resolved, for a model whose layers at the
    config's size have ``shapes``; an ``invert`` or ``caricature`` job's rows are its natural
    images, numbered from 0.

    >>> units_of(config_lib.Config(layers=["a"], units="all"), {"a": (4, 4, 3)})
    {'a': [0, 1, 2]}
    """
    if config.objective in IMAGE_OBJECTIVES:
        return {layer: list(range(config.natural.count)) for layer in config.layers}
    objectives = build_objectives(config, shapes)
    return {layer: np.asarray(o.unit_ids()).tolist() for layer, o in objectives.items()}


# -- the registration ---------------------------------------------------------------------------


def preregister(config: config_lib.Config, path: str | os.PathLike) -> Registration:
    """Freeze the procedure of ``config`` in a registration file at ``path``, before any of
    its results exist; returns it. Everything is checked as for a render (model, layers,
    units); the registration is recorded in the output's ledger.

    Raises :class:`~fvjax.errors.ProcedureError` when ``path`` exists, the output holds
    results of this procedure already (in its manifest, or in a run of its ledger), or the
    objective has no checks to give verdicts (``accentuate``, ``invert``, ``caricature``).
    """
    path = Path(path)
    if config.objective not in LAYER_OBJECTIVES:  # pictures of natural images: no checks
        raise ProcedureError(
            f"a registration freezes the checks that give each unit its verdict, and objective "
            f"{config.objective!r} has none (fvjax check refuses it): render it without a "
            "registration, as an exploratory run"
        )
    if exists(path):
        raise ProcedureError(f"{path} exists; a registration is written once, never replaced")
    plan = build_plan(config)
    root = Path(config.output)
    procedure = config_lib.with_roles(config, PROCEDURE)
    entries = read_ledger(root)
    seen = [
        f"run {e['run']} of {root / LEDGER}"
        for e in entries
        if e["command"] != "preregister" and e["procedure_sha256"] == data_sha256(procedure)
    ]
    manifest = _manifest(root)
    if manifest is not None and config_lib.with_roles(manifest["config"], PROCEDURE) == procedure:
        seen.append(str(root / "manifest.json"))
    if seen:
        raise ProcedureError(
            f"{root} already holds results of this procedure ({', '.join(seen)}), so it cannot "
            "be registered before them; register one whose results nobody has seen (other "
            "units, another checks.seed, ...)"
        )
    weights = weights_sha256(plan.model.params)
    body = {
        "registered": _now(),
        "model": config.model,
        "config": config_lib.to_dict(config),
        "config_sha256": config_lib.sha256(config),
        "weights": config.weights or None,
        "weights_sha256": weights,
        "units": units_of(config, plan.shapes),
        "seeds": list(range(config.seeds)),
        "checks": checks_run(config),
        "checks_with": "the render" if config.checks.enabled else "fvjax check --registered",
        "thresholds": thresholds(config),
        "verdict": VERDICT_RULE,
        "versions": versions(),
    }
    sha = data_sha256(body)
    text = json.dumps({"format": FORMAT, "sha256": sha, "body": body}, indent=1) + "\n"
    atomic_write(path, text)
    entry = _entry(config, "preregister", "registration", weights, body["units"], entries)
    entry.update(status="finished", finished=entry["started"], registration_sha256=sha)
    entry["registration"] = str(path.resolve())
    _write_ledger(root, [*entries, entry])
    return Registration(path, body, sha, text)


def read_registration(path: str | os.PathLike) -> Registration:
    """The registration at ``path``, verified: a file whose body does not hash to the
    ``sha256`` it holds was edited after it was registered, and is refused
    (:class:`~fvjax.errors.ProcedureError`)."""
    path = Path(path)
    try:
        text = path.read_text()
        data = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProcedureError(f"cannot read registration {path}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT or "body" not in data:
        raise ProcedureError(f"{path} is not an fvjax registration (format {FORMAT})")
    found = data_sha256(data["body"])
    if found != data.get("sha256"):
        raise ProcedureError(
            f"registration {path} was edited after it was registered: its body hashes to "
            f"{found[:16]}..., the file says {str(data.get('sha256'))[:16]}...; register anew"
        )
    return Registration(path, data["body"], found, text)


def registered_config(
    registration: Registration,
    data: Mapping[str, Any] | None = None,
    overrides: Iterable[str] = (),
) -> config_lib.Config:
    """The registered config, when ``data`` (a config file's, default: the registered one)
    with ``overrides`` resolves to it; any difference is refused and named."""
    body = registration.body
    registered = config_lib.from_dict(body["config"])
    resolved = config_lib.to_dict(registered)
    if resolved != body["config"]:
        changed = "; ".join(config_lib.differences(body["config"], resolved))
        raise ProcedureError(
            f"the config of {registration.path} resolves otherwise in this fvjax ({changed})"
        )
    asked = config_lib.from_dict(body["config"] if data is None else data, overrides)
    changed = config_lib.differences(resolved, config_lib.to_dict(asked))
    if changed:
        raise ProcedureError(
            f"a registered run takes its procedure unchanged; this one differs from "
            f"{registration.path} in {'; '.join(changed)} (run without --registered to explore)"
        )
    return registered


def _confirm(
    registration: Registration, config: config_lib.Config, weights: str, units: dict
) -> None:
    """Refuse a run that is not the registered procedure, naming every difference."""
    body, problems = registration.body, []
    if config_lib.sha256(config) != body["config_sha256"]:
        problems += config_lib.differences(body["config"], config_lib.to_dict(config)) or [
            "config hash"
        ]
    if weights != body["weights_sha256"]:
        which = config.weights or "the model's own"
        problems.append(
            f"weights: registered {body['weights_sha256'][:16]}..., these ({which}) "
            f"{weights[:16]}..."
        )
    problems += config_lib.differences({"units": body["units"]}, {"units": units})
    problems += config_lib.differences(
        {"thresholds": body["thresholds"]}, {"thresholds": thresholds(config)}
    )
    if problems:
        raise ProcedureError(
            f"this run is not the procedure registered in {registration.path}: "
            f"{'; '.join(problems)}"
        )


# -- the ledger ---------------------------------------------------------------------------------


def read_ledger(root: str | os.PathLike) -> list[dict[str, Any]]:
    """The runs recorded in ``root/ledger.jsonl``, oldest first (none when there is none).

    >>> import tempfile
    >>> read_ledger(tempfile.mkdtemp())
    []
    """
    path = Path(root) / LEDGER
    if not path.exists():
        return []
    entries = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ProcedureError(
                f"{path} line {n} is not JSON ({exc}); fvjax writes the ledger whole, so it "
                "was changed by hand"
            ) from exc
    return entries


def _write_ledger(root: Path, entries: list[dict[str, Any]]) -> None:
    atomic_write(root / LEDGER, "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries))


def _manifest(output: Path) -> dict[str, Any] | None:
    try:
        return read_manifest(output)
    except (OSError, ValueError):
        return None


def _entry(config, command, kind, weights, units, entries, manifest=None) -> dict[str, Any]:
    """A ledger entry, as the run starts."""
    data = config_lib.to_dict(config)
    replaces = None
    if manifest is not None:  # the files of that run this one rewrites
        replaces = {
            "run": (manifest.get("procedure") or {}).get("run"),
            "config_sha256": manifest.get("config_sha256"),
            "complete": manifest.get("complete"),
        }
    return {
        "run": len(entries) + 1,
        "command": command,
        "kind": kind,
        "status": "started",
        "started": _now(),
        "finished": None,
        "config_sha256": config_lib.sha256(config),
        "procedure_sha256": data_sha256(config_lib.with_roles(data, PROCEDURE)),
        "model": config.model,
        "weights_sha256": weights,
        "units": units,
        "seeds": config.seeds,
        "differences": config_lib.differences(entries[-1]["config"], data) if entries else None,
        "replaces": replaces,
        "config": data,
    }


def start_run(
    config: config_lib.Config,
    params: Any,
    command: str,
    units: dict[str, list],
    output: str | os.PathLike,
    registration: Registration | None = None,
    shard: tuple[int, int] = (0, 1),
) -> Run:
    """Record a run of ``config`` (``command``: ``"render"`` or ``"check"``) in the ledger of
    its output root before it starts; returns it with its manifest's label.

    With a ``registration`` the run is confirmatory and checked first: the registered config,
    the weights (``params``' :func:`weights_sha256`), the ``units`` (``{layer: units}``) and the
    path check's constants; a check must be over that registration's render. The registration
    is copied into ``output`` (this process's output directory). Only process 0 of a sharded
    job writes the ledger.
    """
    root, output = Path(config.output), Path(output)
    weights = weights_sha256(params)
    manifest = _manifest(output)
    if registration is not None:
        _confirm(registration, config, weights, units)
        label = (manifest or {}).get("procedure") or {}
        if command == "check" and label.get("registration_sha256") != registration.sha256:
            raise ProcedureError(
                f"the pictures in {output} were not rendered under {registration.path}; "
                f"render them first: fvjax render --registered {registration.path}"
            )
    kind = "exploratory" if registration is None else "confirmatory"
    entries = read_ledger(root)
    entry = _entry(config, command, kind, weights, units, entries, manifest)
    if registration is not None:
        entry["registration_sha256"] = registration.sha256
    if shard[1] > 1:
        entry["shard"] = f"{shard[0]}/{shard[1]}"
    entries = [*entries, entry]
    number = None
    if shard[0] == 0:
        _write_ledger(root, entries)
        number = entry["run"]
    if registration is not None:
        atomic_write(output / REGISTRATION, registration.text)
    return Run(root, number, _label(entries, entry, number, registration))


def _label(entries, entry, number, registration) -> dict[str, Any]:
    """What the manifest and gallery say about a run: its kind, which of the procedures tried
    on this model (model and weights) it is, and how its config differs from the previous."""
    runs = [e for e in entries if e["command"] != "preregister"]
    model = (entry["model"], entry["weights_sha256"])
    tried = list(
        dict.fromkeys(
            e["procedure_sha256"] for e in runs if (e["model"], e["weights_sha256"]) == model
        )
    )
    label = {
        "kind": entry["kind"],
        "run": number,
        "procedure": tried.index(entry["procedure_sha256"]) + 1,
        "procedures": len(tried),
        "weights_sha256": entry["weights_sha256"],
        "differences": entry["differences"],
        "ledger": [
            {k: e.get(k) for k in ("run", "command", "kind", "started", "config_sha256")}
            | {"status": "this run" if e is entry else e["status"]}
            | {"differences": None if e["differences"] is None else len(e["differences"])}
            for e in entries
        ],
    }
    if registration is not None:
        body = registration.body
        label.update(
            registered=body["registered"],
            registration=REGISTRATION,
            registration_sha256=registration.sha256,
            thresholds=body["thresholds"],
            versions_differ=config_lib.differences(body["versions"], versions()),
        )
    return label


def finish_run(run: Run) -> None:
    """Mark ``run`` finished in its ledger (a run killed before this stays ``started``)."""
    if run.number is None:
        return
    entries = read_ledger(run.root)
    for entry in entries:
        if entry["run"] == run.number:
            entry.update(status="finished", finished=_now())
    _write_ledger(run.root, entries)


# -- verdicts -----------------------------------------------------------------------------------


def unit_verdict(summary: Mapping[str, Any], registered: Mapping[str, Any]) -> dict[str, Any]:
    """A unit's verdict from its checks' summary (the manifest's ``checks.layers.<layer>.
    units.<unit>``) and the ``registered`` :func:`thresholds` alone: ``"supported"`` when
    every criterion holds (:data:`VERDICT_RULE`), else ``"not supported"`` with the reasons.

    >>> limits = {"detector_iou": 0.04, "reach_min": 1.0, "far_above": 30.0, "off_path_rival": None}
    >>> unit_verdict({"reach": [2.0, 40.0], "concept": "red", "iou": 0.1, "detector": True}, limits)
    {'verdict': 'supported', 'reasons': [], 'concept': 'red'}
    >>> unit_verdict({"reach": [0.5, None], "concept": "red", "iou": 0.01, "detector": False},
    ...     limits)["reasons"]  # doctest: +NORMALIZE_WHITESPACE
    ['not a detector: best concept red at IoU 0.01, not above 0.04',
     'below-natural: the best reach is 0.5, below 1']
    """
    reasons = []
    if registered["detector_iou"] is not None and "concept" in summary and not summary["detector"]:
        reasons.append(
            f"not a detector: best concept {summary['concept']} at IoU {summary['iou']:.4g}, "
            f"not above {registered['detector_iou']:g}"
        )
    reaches = np.array([r for r in summary["reach"] if r is not None], np.float64)
    if not reaches.size:
        reasons.append("no natural scale: every natural image scores the same")
    else:
        best, least = reaches.max(), registered["reach_min"]
        if best < least:
            reasons.append(f"below-natural: the best reach is {best:.3g}, below {least:g}")
        reasons += [
            f"{flag}: every picture's reach above {registered['far_above']:g}"
            for flag in flags_for(reaches, registered["far_above"])
        ]
    if registered["off_path_rival"] is not None and (summary.get("path") or {}).get("off_path"):
        reasons.append(
            "off-path: the pictures resemble other units' examples more than the unit's own "
            f"do, by more than {registered['off_path_rival']:g}"
        )
    verdict: dict[str, Any] = {"verdict": "not supported" if reasons else "supported"}
    verdict["reasons"] = reasons
    if registered["detector_iou"] is not None and summary.get("detector"):
        verdict["concept"] = summary["concept"]
    return verdict


def verdicts(checks: Mapping[str, Any], registration: Registration) -> dict[str, dict]:
    """``{layer: {unit: verdict}}`` over a manifest's ``checks`` section, from the registered
    thresholds; the checks must have run with the registered settings."""
    body = registration.body
    changed = config_lib.differences(body["config"]["checks"], checks["settings"], "checks.")
    if changed:
        raise ProcedureError(
            f"the checks ran with other settings than registered: {'; '.join(changed)}"
        )
    return {
        layer: {unit: unit_verdict(s, body["thresholds"]) for unit, s in found["units"].items()}
        for layer, found in checks["layers"].items()
    }


def checked(
    label: Mapping[str, Any], checks: Mapping[str, Any], registration: Registration | None
) -> dict[str, Any]:
    """A run's label after its checks: a confirmatory one gains the units' verdicts."""
    if registration is None:
        return dict(label)
    return {**label, "verdicts": verdicts(checks, registration)}
