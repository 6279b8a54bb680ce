"""A bench grid one run after another against the same grid on a local Ray: wall time, CPU time and speed-up.

    python benchmarks/bench_ray.py --work /tmp/bench-ray [--steps 12] [--config BENCH.json]

The grid is the demo's zoom gap (`recipes.demo("zoom")`, or the bench config given) with its two methods, ns and
influence, × seeds 0 and 1: four runs, without retraining. Its preparation (captures, fields, target sets, pre-trained detector) is made first and cached, untimed;
then `neuralsim bench` runs the grid in a fresh folder twice, with one torch thread: one run after another, and with
`--ray local` (a Ray on this machine's cores, one task of one thread per core). Each is timed by the wall clock and by the
user + system CPU time of its whole process tree (this script makes itself the reaper of orphaned descendants, so Ray's
workers and daemons are counted once they exit). Last, Ray's start-up alone: `ray.init` of a local Ray, one trivial
task, `ray.shutdown`. Both grids must end with the same ψ per run, byte for byte (checked).

Writes benchmarks/results/bench-ray.json."""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Orphaned descendants (Ray's raylet and workers) become this process's children, so their CPU time reaches
    RUSAGE_CHILDREN once they are reaped. Linux only."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def reap(wait: float = 60.0) -> int:
    """Reap every exited child; wait up to `wait` s for those still running. Returns how many never exited."""
    deadline = time.monotonic() + wait
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return 0  # none left
        if pid == 0:
            if time.monotonic() > deadline:
                return len([p for p in Path("/proc").iterdir() if p.name.isdigit() and _parent(p) == os.getpid()])
            time.sleep(0.2)


def _parent(proc: Path) -> int | None:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], env: dict) -> dict:
    """Wall and CPU seconds of `cmd` and of every process it started, once all have exited."""
    reap(0)
    cpu, start = cpu_children(), time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    wall = time.perf_counter() - start
    left = reap()
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu_children() - cpu, 1), "processes_not_exited": left}


def ray_startup(cpus: int) -> dict:
    """ray.init of a local Ray, one trivial task, ray.shutdown: seconds of each."""
    import ray

    start = time.perf_counter()
    ray.init(address="local", num_cpus=cpus, include_dashboard=False)
    init = time.perf_counter()
    assert ray.get(ray.remote(lambda: 1).remote()) == 1
    task = time.perf_counter()
    ray.shutdown()
    end = time.perf_counter()
    reap()
    return {"init_s": round(init - start, 2), "first_task_s": round(task - init, 2),
            "shutdown_s": round(end - task, 2), "total_s": round(end - start, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-ray"))
    parser.add_argument("--steps", type=int, default=None, help="outer steps per run (default: the demo's 12)")
    parser.add_argument("--config", default=None, help="a bench config file instead of the demo's zoom gap")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench-ray.json")
    args = parser.parse_args()

    from neuralsim.distributed import machine_cpus
    from neuralsim.experiments.recipes import demo, load_bench_config
    from neuralsim.runtime import to_plain

    bench = load_bench_config(args.config) if args.config else demo("zoom")
    bench.seeds, bench.cache, bench.retrain_per_object = [0, 1], str(args.work / "cache"), 0
    if args.steps is not None:
        bench.optimize.steps = args.steps
    args.work.mkdir(parents=True, exist_ok=True)
    config = args.work / "bench.json"
    config.write_text(json.dumps(to_plain(bench), indent=2) + "\n")
    threads = {v: "1" for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    env = dict(os.environ, **threads)
    env.pop("RAY_ADDRESS", None)
    subreaper = become_subreaper()

    print("preparing (cached, untimed)", flush=True)
    subprocess.run([sys.executable, "-c", "import sys; from neuralsim.runtime import make_deterministic; "
                    "from neuralsim.experiments.recipes import load_bench_config; "
                    "from neuralsim.experiments.prepare import prepare; "
                    "make_deterministic(); prepare(load_bench_config(sys.argv[1]))", str(config)], check=True, env=env)
    reap()

    neuralsim = [sys.executable, "-m", "neuralsim", "bench", str(config), "--device", "cpu"]
    results = {}
    for name, extra in (("serial", []), ("ray", ["--ray", "local"])):
        out = args.work / name
        if out.exists():
            raise SystemExit(f"{out} exists: give a fresh --work (the grid must run, not be reused)")
        print(f"{name}: {len(bench.methods) * len(bench.seeds)} runs of {bench.optimize.steps} steps", flush=True)
        results[name] = timed([*neuralsim, "--out", str(out), *extra], env)
        print(json.dumps(results[name]), flush=True)
    serial, ray_ = results["serial"], results["ray"]
    runs = sorted(p.name for p in (args.work / "serial" / "runs").iterdir())
    same = all((args.work / "serial" / "runs" / r / "psi.json").read_bytes()
               == (args.work / "ray" / "runs" / r / "psi.json").read_bytes() for r in runs)
    result = {
        "command": " ".join(sys.argv), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "grid": {"gap": args.config or "zoom (demo)", "methods": [m.method for m in bench.methods], "seeds": bench.seeds,
                 "steps": bench.optimize.steps, "runs": runs},
        "threads": "1 torch thread: the serial grid in one process; on Ray one per task, one task per core",
        "ray_cpus": machine_cpus(), "cpu_of_descendants_counted": subreaper,
        "serial": serial, "ray": ray_,
        "speedup": round(serial["wall_s"] / ray_["wall_s"], 2),
        "cpu_ratio": round(ray_["cpu_s"] / serial["cpu_s"], 2) if serial["cpu_s"] else None,
        "same_psi_bytes": same,
        "ray_startup": ray_startup(machine_cpus()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if not same:
        raise SystemExit("the Ray grid's ψ differ from the serial grid's")


if __name__ == "__main__":
    main()
