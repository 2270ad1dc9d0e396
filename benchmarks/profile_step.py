"""Where a render step's time goes, from the backend's own profile (``jax.profiler``).

Runs the default step (Fourier + decorrelation, standard transforms, adam) at batch ``B`` for a
few steps under ``jax.profiler.trace`` and sums the time of every XLA operation in the trace.
Each operation is attributed through the compiled program's metadata (the step's named scopes
in its JAX op name) to a part: the parameterization, the transforms, the model, the objective,
the optimizer, or the finiteness check. Prints two tables (parts; the top operations)
and appends them to ``benchmarks/RESULTS.md`` (not with ``--no-record``). The trace itself is
kept under ``--trace-dir`` for TensorBoard or Perfetto.

    python benchmarks/profile_step.py [--model inceptionv1] [--size 224] [--batch 64]
        [--steps 8] [--top 15] [--trace-dir out/profile] [--no-record]
"""

from __future__ import annotations

import collections
import gzip
import json
import re
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from fvjax import benchmarking as bench
from fvjax.rendering import step
from fvjax.rendering.engine import plan_render

#: The named scopes of the step (``fvjax/rendering/step.py``), in the order a JAX op name is
#: searched for them: the innermost part wins (an objective inside the model's backward pass).
PARTS = ("finiteness", "optimizer", "objective", "model", "transforms", "parameterization")

_INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name="([^"]*)"', re.MULTILINE)


def part_of(op_name: str) -> str:
    """The part of the step a JAX op name (``jit(run_steps)/transpose(jvp(model))/...``) is."""
    words = set(re.findall(r"[\w]+", op_name))
    return next((part for part in PARTS if part in words), "other (gradient plumbing, keys)")


def attribution(compiled_text: str) -> dict[str, tuple[str, str]]:
    """HLO instruction name -> (part, JAX op name), from the compiled program's metadata."""
    return {
        name: (part_of(op), op) for name, op in _INSTRUCTION.findall(compiled_text)
    }  # fmt: skip


def main() -> None:
    parser = bench.parser(__doc__, steps=8)
    parser.add_argument("--top", type=int, default=15, help="operations listed")
    parser.add_argument("--trace-dir", default="out/profile", help="where the trace is kept")
    args = bench.parse_args(parser)
    model = bench.load_model(args.model)
    objective = bench.channel_objective(model, args.layer, args.batch, args.size)
    plan = plan_render(model, objective, steps=2, size=args.size)
    keys = jax.random.split(jax.random.key(0), args.batch)
    state = step.init_state(plan.setup, keys)
    directions = jnp.zeros((args.batch, 0))

    def run(n: int) -> None:
        nonlocal state
        for _ in range(n):
            state, values = step.run_steps(
                plan.setup, 1, state, plan.objective, keys, model.params, directions
            )
        values.block_until_ready()

    run(2)  # compile
    start = time.perf_counter()
    run(args.steps)
    wall = (time.perf_counter() - start) / args.steps
    lowered = step.run_steps.lower(
        plan.setup, 1, state, plan.objective, keys, model.params, directions
    )
    names = attribution(lowered.compile().as_text())
    trace_dir = Path(args.trace_dir)
    with jax.profiler.trace(str(trace_dir)):
        run(args.steps)
    trace = max(trace_dir.rglob("*.trace.json.gz"), key=lambda p: p.stat().st_mtime)
    with gzip.open(trace) as f:
        events = json.load(f)["traceEvents"]
    per_op = collections.Counter()
    for event in events:
        if event.get("ph") == "X" and event.get("name") in names:
            per_op[event["name"]] += event["dur"] / 1e3 / args.steps  # ms per step
    if not per_op:  # the backend names its events otherwise: show what the trace holds
        every = collections.Counter()
        for event in events:
            if event.get("ph") == "X":
                every[event["name"]] += event["dur"] / 1e3 / args.steps
        print("no event of the trace is an XLA operation of the step; its longest events:")
        for name, ms in every.most_common(args.top):
            print(f"{ms:9.2f} ms / step  {name[:100]}")
        raise SystemExit(1)
    per_part = collections.Counter()
    for name, ms in per_op.items():
        per_part[names[name][0]] += ms
    total = sum(per_part.values())
    lines = [
        f"model `{args.model}` layer `{args.layer}`, {args.size} px, batch {args.batch}, default "
        f"step (steps_per_call 1), {args.steps} profiled steps; {wall * 1e3:.1f} ms a step "
        f"wall, {total:.1f} ms of it in XLA operations the trace names; trace: {trace}.",
        "",
        "| part | ms / step | share of the operations |",
        "|---|---:|---:|",
        *(f"| {part} | {ms:.2f} | {ms / total:.1%} |" for part, ms in per_part.most_common()),
        "",
        "| operation | part | ms / step | JAX op |",
        "|---|---|---:|---|",
        *(
            f"| `{name}` | {names[name][0]} | {ms:.2f} | `{names[name][1][-70:]}` |"
            for name, ms in per_op.most_common(args.top)
        ),
    ]
    bench.record(args, "Where a step's time goes (profile)", "\n".join(lines))


if __name__ == "__main__":
    main()
