"""Radiance-field benchmarks: fit time and held-out PSNR of the six paper objects, render throughput against
a vanilla NeRF, and peak memory of the patch-wise backward. Results print as Markdown and go to a JSON file.

    python benchmarks/bench_fields.py fit --sizes 64 --steps 1500 --out runs/bench_fields [--fit-json '{"lr_grid": 0.2}']
    python benchmarks/bench_fields.py throughput --field runs/bench_fields/fields/025_mug_64
    python benchmarks/bench_fields.py memory --field runs/bench_fields/fields/025_mug_64
    python benchmarks/bench_fields.py lighting --field runs/bench_fields/fields/025_mug_64 --out docs/figures/x.png
    python benchmarks/bench_fields.py sharpness --capture CAPTURE_DIR --steps 250 --rays-per-step 2048
    python benchmarks/bench_fields.py vanilla-fit --capture CAPTURE_DIR --minutes 30 --out runs/vanilla
"""

from __future__ import annotations

import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import torch
import typer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vanilla_nerf import VanillaNeRF, render_vanilla, render_vanilla_levels

from neuralsim.fields import load_field
from neuralsim.fit import FitConfig, fit
from neuralsim.render import (
    Placement,
    render,
    scene_vjp,
    volume,
)
from neuralsim.runtime import from_plain, resolve_device, to_plain

PAPER_OBJECTS = ["002_master_chef_can", "003_cracker_box", "009_gelatin_box", "019_pitcher_base", "025_mug",
                 "035_power_drill"]
LIGHTING = "studio,warm_left,cool_right,dim_top"
TARGET_PSNR_DB = 28.0
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def _machine() -> str:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"{platform.processor() or 'cpu'}"
    return f"{platform.node()} · {device} · torch {torch.__version__} · {torch.get_num_threads()} torch threads"


def _seconds_to(metrics: Path, target_db: float) -> float | None:
    """Training seconds at the first held-out evaluation whose mean PSNR reaches `target_db`."""
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        if "test" in record and record["test"]["mean"]["psnr"] >= target_db:
            return record["train_seconds"]
    return None


@app.command("fit")
def fit_objects(
    out: Annotated[Path, typer.Option(help="Folder for captures, fields and results.json.")] = Path("runs/bench_fields"),
    objects: Annotated[str, typer.Option(help="Comma-separated built-in objects.")] = ",".join(PAPER_OBJECTS),
    sizes: Annotated[str, typer.Option(help="Comma-separated image sizes in pixels.")] = "64,128",
    views: Annotated[int, typer.Option(help="Views per capture.")] = 100,
    steps: Annotated[int, typer.Option(help="Fit steps per object.")] = 1500,
    eval_every: Annotated[int, typer.Option(help="Steps between held-out evaluations (time-to-28 dB resolution).")] = 100,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    fit_json: Annotated[str, typer.Option(help='Other fit settings as JSON, e.g. \'{"field": {"hidden_width": 128}}\'.')] = "{}",
) -> None:
    """Capture each object (Mitsuba), fit a field, and report held-out PSNR/SSIM and time to 28 dB."""
    config = from_plain(FitConfig, {**json.loads(fit_json), "steps": steps, "eval_every": eval_every}, "--fit-json")
    rows = []
    for size in (int(s) for s in sizes.split(",")):
        for name in objects.split(","):
            capture = out / "captures" / f"{name}_{size}"
            if not (capture / "transforms.json").is_file():
                subprocess.run([sys.executable, "-m", "neuralsim.cli", "capture", name, "--views", str(views), "--size",
                                str(size), "--lighting", LIGHTING, "--out", str(capture), "--overwrite"], check=True)
            field_dir = out / "fields" / f"{name}_{size}"
            started = time.perf_counter()
            evaluation = fit(capture, field_dir, config, device=resolve_device(device),
                             overwrite=True, show_progress=False)
            row = {"object": name, "size": size, "steps": steps, "fit": to_plain(config), "wall_seconds": time.perf_counter() - started,
                   "train_seconds": json.loads((field_dir / "eval.json").read_text())["train_seconds"],
                   "seconds_to_28db": _seconds_to(field_dir / "metrics.jsonl", TARGET_PSNR_DB), "test": evaluation}
            rows.append(row)
            print(json.dumps(row), flush=True)
    (out / "results.json").write_text(json.dumps({"machine": _machine(), "fit": rows}, indent=2))
    print("\n| object | px | held-out PSNR dB (mean) | SSIM | PSNR per lighting | train s | s to 28 dB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        per = ", ".join(f"{k} {v['psnr']:.1f}" for k, v in r["test"].items() if k != "mean")
        to28 = "—" if r["seconds_to_28db"] is None else f"{r['seconds_to_28db']:.0f}"
        print(f"| {r['object']} | {r['size']} | {r['test']['mean']['psnr']:.2f} | {r['test']['mean']['ssim']:.3f} | {per} "
              f"| {r['train_seconds']:.0f} | {to28} |")


def _rays(count: int, radius: float = 4.0) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` rays from a camera at `radius` towards random points of the unit box (seeded)."""
    g = torch.Generator().manual_seed(0)
    origins = torch.tensor([radius, 0.0, 1.0]).expand(count, 3)
    targets = (torch.rand(count, 3, generator=g) * 2 - 1) * 0.8
    return origins.contiguous(), torch.nn.functional.normalize(targets - origins, dim=-1)


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / repeats


@app.command("throughput")
def throughput(
    field: Annotated[Path, typer.Option(help="A fitted field folder.")],
    size: Annotated[int, typer.Option(help="Image size of the grid-field renders (pixels).")] = 64,
    vanilla_rays: Annotated[int, typer.Option(help="Rays per vanilla NeRF batch.")] = 1024,
    repeats: Annotated[int, typer.Option(help="Timed repetitions.")] = 3,
) -> None:
    """Rays/s of the grid field (forward, forward+backward w.r.t. pose and lighting) against a vanilla NeRF."""
    device = resolve_device("auto")
    grid_field = load_field(field, device)
    k = grid_field.anchor_count

    def grid_forward():
        with torch.no_grad():
            render(grid_field, 30.0, 20.0, 4.0, torch.full((k,), 1.0 / k, device=device), size, 40.0)

    def grid_backward():
        azimuth = torch.tensor(30.0, device=device, requires_grad=True)
        weights = torch.full((k,), 1.0 / k, device=device, requires_grad=True)
        out = render(grid_field, azimuth, 20.0, 4.0, weights, size, 40.0)
        (out.rgb.sum() + out.alpha.sum()).backward()

    coarse, fine = VanillaNeRF().to(device), VanillaNeRF().to(device)
    origins, dirs = (x.to(device) for x in _rays(vanilla_rays))

    def vanilla_forward():
        with torch.no_grad():
            render_vanilla(coarse, fine, origins, dirs, 2.0, 6.0, torch.Generator(device=device).manual_seed(0))

    def vanilla_backward():
        origins_leaf = origins.clone().requires_grad_(True)
        render_vanilla(coarse, fine, origins_leaf, dirs, 2.0, 6.0, torch.Generator(device=device).manual_seed(0)).sum().backward()

    pixels = size * size
    result = {
        "machine": _machine(), "size": size,
        "grid_forward_rays_per_s": pixels / _timed(grid_forward, repeats),
        "grid_forward_backward_rays_per_s": pixels / _timed(grid_backward, repeats),
        "vanilla_forward_rays_per_s": vanilla_rays / _timed(vanilla_forward, 1),
        "vanilla_forward_backward_rays_per_s": vanilla_rays / _timed(vanilla_backward, 1),
    }
    print(json.dumps(result, indent=2))
    for mode in ("forward", "forward_backward"):
        grid, vanilla = result[f"grid_{mode}_rays_per_s"], result[f"vanilla_{mode}_rays_per_s"]
        print(f"| {mode.replace('_', '+')} | {grid:,.0f} | {vanilla:,.0f} | {grid / vanilla:,.0f}× |")


@app.command("memory-one", hidden=True)
def memory_one(field: Path, size: int, patch_rays: int) -> None:
    """One patch-wise backward at `size` px in this process; prints the peak memory it added (MiB)."""
    device = resolve_device("auto")
    grid_field = load_field(field, device)
    k = grid_field.anchor_count
    azimuth = torch.tensor(30.0, device=device, requires_grad=True)
    weights = torch.full((k,), 1.0 / k, device=device, requires_grad=True)
    grad_image = torch.ones(size, size, 3, device=device)
    placements = [Placement(grid_field, azimuth, 20.0, 4.0, weights)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    (azimuth_grad, _) = scene_vjp(placements, [azimuth, weights], size, 40.0, grad_image, patch_rays=patch_rays)
    after = torch.cuda.max_memory_allocated() if device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"size": size, "patch_rays": patch_rays, "peak_added_mib": (after - before) / 2**20,
                      "azimuth_grad": azimuth_grad.item()}))


@app.command("memory")
def memory(
    field: Annotated[Path, typer.Option(help="A fitted field folder.")],
    sizes: Annotated[str, typer.Option(help="Comma-separated image sizes.")] = "64,128,256",
    patch_rays: Annotated[int, typer.Option(help="Rays per patch.")] = 1024,
) -> None:
    """Peak memory added by a patch-wise backward at each size (fresh process each; RSS on CPU)."""
    rows = []
    for size in sizes.split(","):
        done = subprocess.run([sys.executable, __file__, "memory-one", str(field), size, str(patch_rays)],
                              capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(json.dumps({"machine": _machine(), "memory": rows}, indent=2))
    for row in rows:
        print(f"| {row['size']} | {row['patch_rays']} | {row['peak_added_mib']:.1f} |")


@app.command("lighting")
def lighting(
    field: Annotated[Path, typer.Option(help="A fitted field folder with several lighting conditions.")],
    out: Annotated[Path, typer.Option(help="PNG strip to write.")],
    first: Annotated[int, typer.Option(help="Anchor at the left end.")] = 0,
    second: Annotated[int, typer.Option(help="Anchor at the right end.")] = 1,
    frames: Annotated[int, typer.Option(help="Images in the strip.")] = 7,
    size: Annotated[int, typer.Option(help="Image size in pixels.")] = 96,
) -> None:
    """Render weights (1 − s)·anchor_first + s·anchor_second for s from 0 to 1, side by side over white."""
    import numpy as np

    from neuralsim.render import composite
    from neuralsim.runtime import atomic_save_png

    grid_field = load_field(field)
    tiles = []
    for s in np.linspace(0.0, 1.0, frames):
        weights = torch.zeros(grid_field.anchor_count)
        weights[first], weights[second] = 1.0 - s, s
        with torch.no_grad():
            image = render(grid_field, 30.0, 25.0, 4.0, weights, size, 40.0)
            rgb = composite(image.rgb, image.alpha, torch.ones_like(image.rgb)).clamp(0, 1)
        tiles.append((rgb.numpy() * 255).round().astype(np.uint8))
    atomic_save_png(out, np.concatenate(tiles, axis=1))
    names = grid_field.appearance.names
    print(f"{out}: {names[first]} → {names[second]} in {frames} steps")



def _kept_samples_and_times(field, size: int, poses: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    """Mean kept samples per image, seconds per image of a no-grad render and of a patch-wise VJP (1024 rays)."""
    kept = []
    composite = volume.composite_samples

    def counting(sigma, *rest):
        kept.append(int((sigma > 0).sum()))
        return composite(sigma, *rest)

    volume.composite_samples = counting
    try:
        with torch.no_grad():
            forward = _timed(lambda: [render(field, a, e, r, 0, size, 40.0) for a, e, r in poses], 1) / len(poses)
    finally:
        volume.composite_samples = composite
    upstream = torch.randn(size, size, 3, generator=torch.Generator().manual_seed(0))

    def vjps():
        for a, e, r in poses:
            pose = [torch.tensor(v, requires_grad=True) for v in (a, e, r)]
            scene_vjp([Placement(field, *pose)], pose, size, 40.0, upstream, patch_rays=1024)

    return sum(kept[-len(poses):]) / len(poses), forward, _timed(vjps, 1) / len(poses)


@app.command("sharpness")
def sharpness(
    capture: Annotated[Path, typer.Option(help="A capture folder (e.g. a cached one under ~/.cache/neuralsim/captures).")],
    settings: Annotated[str, typer.Option(help="Semicolon-separated lr_density,distortion_weight pairs.")] =
        "0.1,0;0.3,0;0.3,0.1;0.3,0.3",
    steps: Annotated[int, typer.Option(help="Fit steps.")] = 250,
    rays_per_step: Annotated[int, typer.Option(help="Rays per fit step.")] = 2048,
    size: Annotated[int, typer.Option(help="Render size of the timing (pixels).")] = 64,
    out: Annotated[Path, typer.Option(help="Folder for the fields and results.json.")] = Path("runs/bench_sharpness"),
    fit_json: Annotated[str, typer.Option(help='Other fit settings for every fit, as JSON, e.g. \'{"tv_density": 0}\'.')] = "{}",
) -> None:
    """Density learning rate and distortion loss: held-out PSNR, kept samples per image, render and VJP seconds."""
    others = json.loads(fit_json)
    poses = [(float(a), 20.0, float(r)) for a, r in zip(torch.linspace(0, 330, 12), torch.linspace(3.6, 5.4, 12))]
    rows = []
    for setting in settings.split(";"):
        lr_density, weight = (float(x) for x in setting.split(","))
        field_dir = out / f"{capture.name}-lr{lr_density}-d{weight}"
        config = from_plain(FitConfig, {**others, "steps": steps, "rays_per_step": rays_per_step, "eval_every": 0,
                                        "lr_density": lr_density, "distortion_weight": weight}, "--fit-json")
        evaluation = fit(capture, field_dir, config, device=torch.device("cpu"), overwrite=True, show_progress=False)
        field = load_field(field_dir, "cpu")
        kept, forward, vjp = _kept_samples_and_times(field, size, poses)
        rows.append({"lr_density": lr_density, "distortion_weight": weight, "fit": to_plain(config), "psnr": evaluation["mean"]["psnr"],
                     "ssim": evaluation["mean"]["ssim"],
                     "train_seconds": json.loads((field_dir / "eval.json").read_text())["train_seconds"],
                     "kept_samples_per_image": kept, "render_seconds": forward, "vjp_seconds": vjp})
        print(json.dumps(rows[-1]), flush=True)
    (out / "results.json").write_text(json.dumps({"machine": _machine(), "capture": str(capture), "rows": rows}, indent=2))
    print(f"\n{capture.name}, {steps} steps × {rays_per_step} rays, renders at {size} px:\n")
    print("| lr_density | distortion | held-out PSNR dB | SSIM | fit s | kept samples / image | render s / image | VJP s / image |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['lr_density']} | {r['distortion_weight']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['train_seconds']:.0f} "
              f"| {r['kept_samples_per_image']:.0f} | {r['render_seconds']:.3f} | {r['vjp_seconds']:.3f} |")



def _vanilla_test_psnr(coarse: VanillaNeRF, fine: VanillaNeRF, capture, bound: float, device, chunk: int = 2048) -> dict:
    """Held-out PSNR/SSIM of the fine pass over the capture's test views, composited over white like the grid
    field's evaluation; rays that miss the object box show the background, as they do for the grid field."""
    import numpy as np

    from neuralsim.cameras import camera_rays
    from neuralsim.fit.metrics import psnr, ssim
    from neuralsim.fit.trainer import EVAL_BACKGROUND, load_images
    from neuralsim.render.labels import composite
    from neuralsim.render.volume import ray_box

    rgba, c2ws = load_images(capture, "test")
    h, w = capture.intrinsics.height, capture.intrinsics.width
    scores = []
    generator = torch.Generator(device=device).manual_seed(0)
    for target, c2w in zip(rgba, c2ws):
        origins, dirs = (x.to(device) for x in camera_rays(c2w, capture.intrinsics))
        near, far = ray_box(origins, dirs, bound)
        hit = (far > near).nonzero()[:, 0]
        rgb = torch.zeros(h * w, 3, device=device)
        alpha = torch.zeros(h * w, device=device)
        with torch.no_grad():
            for ids in hit.split(chunk):
                _, (c, a) = render_vanilla_levels(coarse, fine, origins[ids], dirs[ids], near[ids], far[ids], generator)
                rgb[ids], alpha[ids] = c, a
        background = torch.full((h, w, 3), EVAL_BACKGROUND)
        prediction = composite(rgb.reshape(h, w, 3).cpu(), alpha.reshape(h, w).cpu(), background).clamp(0, 1)
        expected = composite(target[..., :3] * target[..., 3:], target[..., 3], background)
        scores.append((psnr(prediction, expected), ssim(prediction, expected)))
    return {"psnr": float(np.mean([p for p, _ in scores])), "ssim": float(np.mean([q for _, q in scores])),
            "views": len(scores)}


@app.command("vanilla-fit")
def vanilla_fit(
    capture: Annotated[Path, typer.Option(help="A capture folder with one lighting condition (the vanilla NeRF has "
                                               "no appearance embedding).")],
    out: Annotated[Path, typer.Option(help="Folder for metrics.jsonl, the checkpoint and results.json.")],
    minutes: Annotated[float, typer.Option(help="Training time budget (evaluations not counted).")] = 30.0,
    rays_per_step: Annotated[int, typer.Option(help="Rays per Adam step.")] = 512,
    lr: Annotated[float, typer.Option(help="Adam learning rate at the start (the original's 5e-4).")] = 5e-4,
    eval_minutes: Annotated[float, typer.Option(help="Training minutes between held-out evaluations.")] = 10.0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Train the original NeRF configuration on a capture for a time budget and record its held-out PSNR against
    training time: the other half of "faster at equal PSNR". The learning rate decays 10× over the budget (the
    original decays 10× over 250k steps); the loss is the grid field's (premultiplied colour and alpha), on the
    coarse and the fine pass. Resumes from its checkpoint when `out` holds one."""
    from neuralsim.data.transforms import load_capture
    from neuralsim.fit.trainer import load_images, ray_bank
    from neuralsim.render.volume import RenderConfig, ray_box

    torch_device = resolve_device(device)
    scene = load_capture(capture)
    if scene.num_appearances != 1:
        raise typer.BadParameter(f"{capture} has {scene.num_appearances} lighting conditions; the vanilla NeRF "
                                 "reproduces one (capture with --lighting studio).")
    bound = RenderConfig().bound
    rgba, c2ws = load_images(scene, "train")
    bank = ray_bank(scene, rgba, c2ws, bound, torch_device)
    near_all, far_all = ray_box(bank.origins, bank.dirs, bound)
    torch.manual_seed(0)
    coarse, fine = VanillaNeRF().to(torch_device), VanillaNeRF().to(torch_device)
    optimizer = torch.optim.Adam([*coarse.parameters(), *fine.parameters()], lr=lr)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint, metrics = out / "checkpoint.pt", out / "metrics.jsonl"
    step, seconds, next_eval = 0, 0.0, eval_minutes * 60.0
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location=torch_device, weights_only=True)
        coarse.load_state_dict(state["coarse"]), fine.load_state_dict(state["fine"])
        optimizer.load_state_dict(state["optimizer"])
        step, seconds, next_eval = state["step"], state["seconds"], state["next_eval"]
        lines = metrics.read_text().splitlines() if metrics.is_file() else []
        metrics.write_text("".join(f"{line}\n" for line in lines if json.loads(line)["step"] <= step))
    elif metrics.exists():
        metrics.unlink()
    budget = minutes * 60.0
    generator = torch.Generator(device=torch_device)
    while seconds < budget:
        started = time.perf_counter()
        generator.manual_seed(step)
        ids = torch.randint(len(bank.origins), (rays_per_step,), generator=generator, device=torch_device)
        target = bank.rgba[ids]
        levels = render_vanilla_levels(coarse, fine, bank.origins[ids], bank.dirs[ids], near_all[ids], far_all[ids],
                                       generator)
        loss = sum(torch.nn.functional.mse_loss(rgb, target[:, :3] * target[:, 3:])
                   + torch.nn.functional.mse_loss(alpha, target[:, 3]) for rgb, alpha in levels)
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.1 ** (seconds / budget)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seconds += time.perf_counter() - started
        step += 1
        if seconds >= next_eval or seconds >= budget:
            test = _vanilla_test_psnr(coarse, fine, scene, bound, torch_device)
            with metrics.open("a") as f:
                f.write(json.dumps({"step": step, "train_seconds": seconds, "loss": loss.item(), "test": test}) + "\n")
            print(f"step {step}  {seconds / 60:.1f} min  loss {loss.item():.4f}  test PSNR {test['psnr']:.2f} dB", flush=True)
            next_eval += eval_minutes * 60.0
            torch.save({"coarse": coarse.state_dict(), "fine": fine.state_dict(), "optimizer": optimizer.state_dict(),
                        "step": step, "seconds": seconds, "next_eval": next_eval}, checkpoint.with_suffix(".tmp"))
            checkpoint.with_suffix(".tmp").replace(checkpoint)
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    result = {"machine": _machine(), "capture": str(capture), "rays_per_step": rays_per_step, "lr": lr,
              "steps": step, "train_seconds": seconds, "rays_per_second": step * rays_per_step / seconds,
              "curve": [{"step": r["step"], "train_seconds": r["train_seconds"], "psnr": r["test"]["psnr"],
                         "ssim": r["test"]["ssim"]} for r in records]}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}, indent=2))
    print("\n| training s | steps | held-out PSNR dB | SSIM |\n|---|---|---|---|")
    for r in result["curve"]:
        print(f"| {r['train_seconds']:.0f} | {r['step']} | {r['psnr']:.2f} | {r['ssim']:.3f} |")


if __name__ == "__main__":
    app()
