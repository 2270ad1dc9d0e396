"""Record, or check, the SHA-256 of every picture two shipped jobs write on this backend.

    python scripts/picture_hashes.py --record   # write tests/data/picture_hashes.json
    python scripts/picture_hashes.py            # render again and compare (exit 1 on a change)

The jobs are ``configs/tiny.toml`` and ``configs/default.toml`` at 16 steps (the same code
paths as the full job, a few seconds each). Pictures are bit for bit reproducible on one
backend, not across CPUs or XLA versions, so the file records the machine it was made on and
``tests/test_layout.py`` compares only on that machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORD = ROOT / "tests" / "data" / "picture_hashes.json"
JOBS = {
    "tiny": ["--config", "configs/tiny.toml"],
    "default-16": ["--config", "configs/default.toml", "steps=16", "checks.enabled=false"],
}


def fingerprint() -> dict[str, str]:
    """What the pictures' bits depend on besides the code: XLA's version and the CPU."""
    flags, cpu = "", platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = line
    except OSError:
        pass
    return {
        "jax": metadata.version("jax"),
        "jaxlib": metadata.version("jaxlib"),
        "machine": platform.machine(),
        "cpu": cpu,
        "avx512f": str(" avx512f" in flags),
    }


def picture_hashes(job: str) -> dict[str, str]:
    """``{relative path: sha256}`` of every unit picture ``job`` writes, rendered on CPU."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "fvjax.cli", "render", *JOBS[job], f"output={out}"]
        command.append("progress=false")
        env = {"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True, env=env)
        return {
            str(path.relative_to(out)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(Path(out).rglob("unit*.png"))
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help=f"write {RECORD.name}")
    args = parser.parse_args()
    found = {job: picture_hashes(job) for job in JOBS}
    if args.record:
        RECORD.parent.mkdir(parents=True, exist_ok=True)
        data = {"fingerprint": fingerprint(), "jobs": found}
        RECORD.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        print(f"recorded {sum(map(len, found.values()))} pictures in {RECORD}")
        return 0
    recorded = json.loads(RECORD.read_text())
    changed = [
        f"{job}/{name}"
        for job, hashes in found.items()
        for name in hashes.keys() | recorded["jobs"][job].keys()
        if hashes.get(name) != recorded["jobs"][job].get(name)
    ]
    print(f"{len(changed)} of {sum(map(len, found.values()))} pictures changed")
    print("\n".join(changed[:20]))
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
