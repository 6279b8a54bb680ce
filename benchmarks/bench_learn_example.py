"""Time `neuralsim learn` on the example end to end from a cold cache, then once more in place (every stage reused).

    python benchmarks/bench_learn_example.py --work /tmp/learn-example --threads 2

Writes benchmarks/results/learn-example.json: wall time of making the photos and of each run, the time per stage
(stages.json) and the judge's summary. Resumable: run it again after an interruption and the photos, the cache and
the learn run continue where they stopped (the cold time is then the sum of the parts, and says so)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    return round(time.perf_counter() - start, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/learn-example"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "learn-example.json")
    args = parser.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               NEURALSIM_CACHE=str(args.work / "cache"))
    neuralsim = [sys.executable, "-m", "neuralsim.cli"]
    project = args.work / "project.json"
    args.work.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "examples" / "project.json", project)
    times = json.loads(args.out.read_text())["seconds"] if args.out.is_file() else {}
    if not (args.work / "photos" / "annotations.json").is_file():
        times["make_photos"] = timed([*neuralsim, "examples", "make-photos", str(args.work / "photos"),
                                      "--overwrite"], env)
    times["learn_cold"] = times.get("learn_cold", 0.0) + timed([*neuralsim, "learn", str(project), "--out",
                                                                 str(args.work / "run")], env)
    times["learn_again_in_place"] = timed([*neuralsim, "learn", str(project), "--out", str(args.work / "run")], env)
    result = {"command": " ".join(sys.argv), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "threads": args.threads, "seconds": times,
              "stages": json.loads((args.work / "run" / "stages.json").read_text()),
              "summary": json.loads((args.work / "run" / "summary.json").read_text())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["seconds"]), json.dumps(result["stages"]))


if __name__ == "__main__":
    main()
