"""Build the benchmark's C programs with gcc into ``build/bench/`` (never committed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILD = HERE.parent / "build" / "bench"
PROGRAMS = {
    "nfq_accept": ("nfq_accept.c", ["-lnetfilter_queue", "-lnfnetlink"]),
    "traffic": ("traffic.c", []),
}


class BuildError(RuntimeError):
    pass


def build(outdir: Path = BUILD) -> dict[str, Path]:
    """Compile each program when its binary is missing or older than its source."""
    if shutil.which("gcc") is None:
        raise BuildError("the benchmark needs gcc (apt-get install gcc)")
    outdir.mkdir(parents=True, exist_ok=True)
    built = {}
    for name, (source, libs) in PROGRAMS.items():
        src, out = HERE / source, outdir / name
        if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
            done = subprocess.run(
                ["gcc", "-O2", "-Wall", "-Wextra", "-o", str(out), str(src), *libs],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            if done.returncode:
                hint = " (apt-get install libnetfilter-queue-dev)" if libs else ""
                raise BuildError(f"gcc {source} failed{hint}:\n{done.stderr[-3000:]}")
        built[name] = out
    return built
