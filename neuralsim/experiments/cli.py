"""Commands of the experiments part: `bench` (the paper's gap experiments) and `demo` (a small zoom gap by default)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from neuralsim.errors import UserError

if TYPE_CHECKING:
    from neuralsim.experiments.recipes import BenchConfig


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


DEMO_STORY = {
    "zoom": "the pitcher and the drill are tested from the farthest radius bin (6.5–7.5, small in the image) "
            "while ψ starts with the nearest bin (3.5–4.5) at 0.8",
    "pose": "the pitcher and the drill are tested from azimuth bin 1 (0–45°) while ψ starts with bin 5 "
            "(180–225°) at 0.8",
    "illumination": "the pitcher and the drill are tested in a dark room (low_light: nearly silhouettes) while ψ "
                    "starts with studio at 0.8",
}


def script_bench(config: str | None, gap: str, demo: bool = False, cache: str | None = None) -> BenchConfig:
    """The bench a benchmark script works on: a bench config file (with its own gap), else with `demo` the demo's
    preset of the gap, else the gap's recipe; `cache` overrides the bench's own."""
    from neuralsim.experiments import recipes

    bench = recipes.load_bench_config(config) if config else recipes.demo(gap) if demo else recipes.recipe(gap)
    bench.cache = cache or bench.cache
    return bench


def demo_summary(out: Path) -> str:
    """One paragraph: how ψ of the biased objects moved and what it did to their test AP."""
    from neuralsim.experiments.bench_report import TAIL, summarise

    summary = summarise(out)
    by = {r["method"]: r for r in summary["rows"]}
    parts = []
    for obj in summary["biased"]:
        moved = ", ".join(f"{m} {by[m][f'tv_first/{obj}']:.2f} → {by[m][f'tv_last/{obj}']:.2f}" for m in by if m != "ns")
        aps = ", ".join(f"{m} {100 * by[m][f'ap_first/{obj}']:.1f} → {100 * by[m][f'ap/{obj}']:.1f}" for m in by)
        parts.append(f"{obj}: distance of ψ to the test distribution (TV) {moved}; test AP {aps}")
    return ("; ".join(parts) + f" (AP after the first step → mean of the last {TAIL} steps). One seed: a biased "
            "object's AP moves by up to about 3.5 points from seed to seed (the zoom gap's standard deviation over 3 "
            "seeds, docs/RESULTS.md); the same command at the same thread count repeats these numbers exactly")


def register(app: typer.Typer) -> None:
    @app.command("bench", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def bench_cmd(
        ctx: typer.Context,
        gap: Annotated[str, typer.Argument(help="pose, zoom, illumination or ycb21, or a bench config JSON file.")],
        out: Annotated[Path, typer.Option(help="Benchmark folder: runs/, summary.json, report.html.")],
        methods: Annotated[str | None, typer.Option(help="Comma-separated method names (ns, nso, influence, …; docs/config.md).")] = None,
        inits: Annotated[str | None, typer.Option(help="Comma-separated ψ initialisations: same, uniform, different.")] = None,
        seeds: Annotated[str | None, typer.Option(help="Comma-separated seeds.")] = None,
        steps: Annotated[int | None, typer.Option(help="Outer steps per run.")] = None,
        images_per_object: Annotated[int | None, typer.Option(help="Training images per object per step.")] = None,
        size: Annotated[int | None, typer.Option(help="Image size in pixels.")] = None,
        retrain: Annotated[int | None, typer.Option(
            help="After each run, train a detector from scratch on this many renders per object from its final ψ, "
                 "and one on ψ₀ with the same random numbers (0: none).")] = None,
        cache: Annotated[Path | None, typer.Option(help="Cache folder (default $NEURALSIM_CACHE or ~/.cache/neuralsim).")] = None,
        device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
        ray: Annotated[str | None, typer.Option(
            "--ray", metavar="local|ADDRESS",
            help="Run the objects' fields, the runs and the retrainings as Ray tasks, one core each (one GPU each on "
                 "CUDA): `local` starts a Ray on this machine's cores; HEAD:6379 (on a node of a cluster) or "
                 "ray://HEAD:10001 joins the cluster started by `ray start --head`, whose nodes must all see --out "
                 "and the cache (shared storage). The files are those of a run without it.")] = None,
    ) -> None:
        """Run a gap experiment of the paper (Fig. 4) on the built-in objects and write its report.

        Settings come from the recipe's defaults, or from a config file (every field of `BenchConfig`, listed in
        docs/config.md), and the options given here override them; any other setting may follow as
        `--optimize.psi-optimizer.lr 2` (`neuralsim bench GAP --out DIR --help-settings` lists them)."""
        from neuralsim.experiments.bench import run_bench
        from neuralsim.experiments.recipes import BenchConfig, load_bench_config
        from neuralsim.runtime import resolve_device
        from neuralsim.schema import from_args

        bench = load_bench_config(gap)
        args = ["--help" if a == "--help-settings" else a for a in ctx.args]
        if args:
            bench = from_args(BenchConfig, bench, args, "neuralsim bench GAP --out DIR [OPTIONS]")
        if seeds is not None:
            try:
                bench.seeds = [int(s) for s in _csv(seeds)]
            except ValueError:
                raise UserError(f"--seeds must be comma-separated integers, got {seeds!r}.") from None
        if methods is not None:
            bench = bench.with_methods(_csv(methods))
        for name, value in (("inits", inits and _csv(inits)), ("size", size), ("retrain_per_object", retrain)):
            if value is not None:
                setattr(bench, name, value)
        for name, value in (("steps", steps), ("images_per_object", images_per_object)):
            if value is not None:
                setattr(bench.optimize, name, value)
        bench.cache = str(cache) if cache else bench.cache
        bench.device = resolve_device(device).type
        bench.validate()  # the options too
        from neuralsim.distributed import make_executor

        with make_executor(ray) as executor:
            typer.echo(f"report: {run_bench(bench, out, log=typer.echo, executor=executor)}")

    @app.command("substitution")
    def substitution_cmd(
        config: Annotated[str, typer.Argument(help="A gap name (its objects and sizes) or a bench config JSON file.")],
        out: Annotated[Path, typer.Option(help="Folder for result.json and summary.md.")],
        per_object: Annotated[int, typer.Option(help="Training images per object.")] = 80,
        epochs: Annotated[int, typer.Option(help="Detector training epochs (from scratch).")] = 30,
        seeds: Annotated[str, typer.Option(help="Comma-separated detector seeds.")] = "0",
        cache: Annotated[Path | None, typer.Option(help="Cache folder (default $NEURALSIM_CACHE or ~/.cache/neuralsim).")] = None,
        device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    ) -> None:
        """Radiance fields against the ground-truth renderer as training data: the same placements rendered by
        both, a detector trained from scratch on each, both scored on one ground-truth test set."""
        from neuralsim.experiments.recipes import load_bench_config
        from neuralsim.experiments.substitution import run_substitution
        from neuralsim.runtime import resolve_device

        bench = load_bench_config(config)
        try:
            seed_list = tuple(int(s) for s in _csv(seeds))
        except ValueError:
            raise UserError(f"--seeds must be comma-separated integers, got {seeds!r}.") from None
        if per_object < 1 or epochs < 1 or not seed_list:
            raise UserError("--per-object and --epochs must be positive and --seeds not empty.")
        bench.cache = str(cache) if cache else bench.cache
        bench.device = resolve_device(device).type
        result = run_substitution(bench, out, per_object, epochs, seed_list, log=typer.echo)
        s = result["summary"]
        typer.echo(f"AP trained on ground-truth renders {100 * s['ground_truth']['ap']:.1f}, on field renders "
                   f"{100 * s['field']['ap']:.1f} (difference {100 * result['gap_ap']:.1f} points); {out / 'summary.md'}")

    @app.command("demo")
    def demo_cmd(
        out: Annotated[Path, typer.Option(help="Demo folder.")] = Path("runs/demo"),
        cache: Annotated[Path | None, typer.Option(help="Cache folder (default $NEURALSIM_CACHE or ~/.cache/neuralsim).")] = None,
        gap: Annotated[str, typer.Option(help="zoom (default), pose or illumination.")] = "zoom",
        device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    ) -> None:
        """A small gap experiment on four built-in objects, NS against `influence`, ending with a report.

        The zoom gap is the default: at the demo's size a detector trained on the wrong zoom loses most of its
        AP on the target zoom, so there is something to recover; the pose gap leaves little (docs/RESULTS.md)."""
        from neuralsim.experiments.bench import run_bench
        from neuralsim.experiments.recipes import demo
        from neuralsim.runtime import resolve_device

        if gap not in DEMO_STORY:
            raise UserError(f"--gap must be one of {', '.join(DEMO_STORY)}, not {gap!r}.")
        start = time.perf_counter()
        bench = demo(gap)
        bench.cache, bench.device = str(cache) if cache else None, resolve_device(device).type
        report = run_bench(bench, out, log=typer.echo)
        typer.echo(f"\nreport: {report.resolve()}")
        typer.echo(f"{gap.capitalize()} gap, {len(bench.objects)} objects: {DEMO_STORY[gap]}; {bench.optimize.steps} outer "
                   f"steps ({time.perf_counter() - start:.0f} s). {demo_summary(out)}.")
