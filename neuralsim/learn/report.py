"""The report of a `learn` run: summary.json, a self-contained report.html (figures inlined, readable offline) and a
verdict paragraph that says plainly whether the learned data beat domain randomisation. AP is in points (0–100)
everywhere; counts are integers."""

from __future__ import annotations

import base64
import html
import io
import math
from typing import TYPE_CHECKING

import numpy as np

from neuralsim.runtime import atomic_write_json, atomic_write_text, read_json

if TYPE_CHECKING:
    from neuralsim.learn.pipeline import Learn


def points(v: float | None) -> float | None:
    return None if v is None else round(100.0 * v, 1)


def paired(learned: list[float], dr: list[float]) -> dict:
    """Mean ± standard deviation of the per-seed gains learned − DR, their standard error, and how many are > 0."""
    gains = np.asarray(learned, float) - np.asarray(dr, float)
    n = len(gains)
    sd = float(gains.std(ddof=1)) if n > 1 else float("nan")
    return {"mean": round(float(gains.mean()), 1), "sd": None if math.isnan(sd) else round(sd, 1),
            "se": None if math.isnan(sd) else round(sd / math.sqrt(n), 1), "positive": int((gains > 0).sum()),
            "seeds": n, "gains": [round(float(g), 1) for g in gains]}


def summarise(run: Learn) -> dict:
    """The judge's scores (AP in points) per seed and class, the paired gains, ψ against uniform, times per stage."""
    seeds = range(run.project.judge.seeds)
    results = {name: [read_json(run.out / "judge" / f"{name}-s{k}.json", "Judge result") for k in seeds]
               for name in ("learned", "dr")}
    overall = {name: {"ap": [points(r["ap"]) for r in rs], "ap50": [points(r["ap50"]) for r in rs]}
               for name, rs in results.items()}
    per_class = {}
    for c in run.names:
        entry = {}
        for name, rs in results.items():
            for metric in ("ap", "ap50"):
                values = [points(r["per_class"][c][metric]) for r in rs if r["per_class"][c][metric] is not None]
                entry[f"{name}_{metric}"] = round(float(np.mean(values)), 1) if values else None
        learned = [points(r["per_class"][c]["ap"]) or 0.0 for r in results["learned"]]
        dr = [points(r["per_class"][c]["ap"]) or 0.0 for r in results["dr"]]
        per_class[c] = entry | {"gain": paired(learned, dr)}
    psi = read_json(run.out / "learn" / "psi.json", "ψ file")["objects"]
    return {
        "objects": run.names, "seeds": len(seeds), "images_per_object": run.project.judge.images_per_object,
        "ap": {name: round(float(np.mean(v["ap"])), 1) for name, v in overall.items()},
        "ap50": {name: round(float(np.mean(v["ap50"])), 1) for name, v in overall.items()},
        "ap_per_seed": {name: v["ap"] for name, v in overall.items()},
        "gain": paired(overall["learned"]["ap"], overall["dr"]["ap"]),
        "per_class": per_class,
        "psi": _psi_probs(psi),
        "psi_tv_from_uniform": {o: {f: round(_tv_from_uniform(p), 3) for f, p in fs.items()}
                                for o, fs in _psi_probs(psi).items()},
        "seconds": read_json(run.out / "stages.json", "Stage times") if (run.out / "stages.json").is_file() else {},
    }


def _psi_probs(psi: dict) -> dict[str, dict[str, list[float]]]:
    return {o: {f: spec["probs"] if f != "lighting" else spec["weights"] for f, spec in d.items()} for o, d in psi.items()}


def _tv_from_uniform(p: list[float]) -> float:
    p = np.asarray(p, float)
    return float(0.5 * np.abs(p - 1.0 / len(p)).sum())


def verdict(summary: dict) -> str:
    """One paragraph: did learning help, by how much, and how sure is that."""
    g, ap = summary["gain"], summary["ap"]
    n = g["seeds"]
    spread = f" ± {g['se']} (standard error)" if g["se"] is not None else ""
    head = (f"Learned data scored {ap['learned']} AP on your test photos, domain randomisation {ap['dr']} AP, "
            f"with the same detector recipe, {summary['images_per_object']} images per object and paired random "
            f"numbers over {n} seed{'s' if n != 1 else ''}: a paired gain of {g['mean']:+.1f} AP{spread}, positive on "
            f"{g['positive']} of {n}.")
    if g["se"] is None:
        return head + " One seed cannot tell a gain from the noise of training; judge with more seeds."
    if g["mean"] > 2 * g["se"] and g["positive"] == n:
        tail = " Learning helped: use the learned dataset."
    elif g["mean"] < -2 * g["se"]:
        tail = (" Learning did not help: domain randomisation was better here. Use domain randomisation, or give "
                "more validation photos.")
    else:
        tail = (" Learning did not help measurably: the gain is within the noise of training a detector. Domain "
                "randomisation serves as well on these photos.")
    best = max(summary["per_class"].items(), key=lambda kv: kv[1]["gain"]["mean"])
    worst = min(summary["per_class"].items(), key=lambda kv: kv[1]["gain"]["mean"])
    return head + tail + (f" By class, the gain ranged from {worst[1]['gain']['mean']:+.1f} AP ({worst[0]}) to "
                          f"{best[1]['gain']['mean']:+.1f} AP ({best[0]}).")


def write_report(run: Learn) -> dict:
    summary = summarise(run)
    summary["verdict"] = verdict(summary)
    atomic_write_json(run.out / "summary.json", summary)
    atomic_write_text(run.out / "report.html", _html(run, summary))
    return summary


# ----------------------------------------------------------------------------- html


def _img(data: bytes, alt: str, width: int | None = None) -> str:
    size = f' width="{width}"' if width else ""
    return f'<img alt="{html.escape(alt)}"{size} src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _psi_figure(summary: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objects = list(summary["psi"])
    factors = list(next(iter(summary["psi"].values())))
    fig, axes = plt.subplots(len(objects), len(factors), figsize=(2.6 * len(factors), 1.7 * len(objects)), squeeze=False)
    for i, o in enumerate(objects):
        for j, f in enumerate(factors):
            p = summary["psi"][o][f]
            ax = axes[i][j]
            ax.bar(range(len(p)), p, color="#3a6ea5")
            ax.axhline(1.0 / len(p), color="#c0392b", lw=1, ls="--")
            ax.set_ylim(0, 1)
            ax.set_xticks(range(len(p)))
            ax.tick_params(labelsize=6)
            if i == 0:
                ax.set_title(f, fontsize=8)
            if j == 0:
                ax.set_ylabel(o, fontsize=7)
    fig.suptitle("learned ψ (bars) against domain randomisation (dashed: uniform)", fontsize=9)
    data = _figure_png(fig)
    plt.close(fig)
    return data


def _pictures(run: Learn) -> tuple[list[bytes], list[bytes]]:
    """A few learned training images (the export) and a few test photos."""
    learned = sorted((run.out / "dataset" / "images").glob("*.png"))
    names = run.names
    picks = [p for o in names for p in learned if p.name.startswith(_stem(o))][:: max(1, len(learned) // 8)][:8]
    from neuralsim.data.coco import load_coco

    test = load_coco(run.out / "photos" / "test")
    photos = [s.image_path for s in test.samples[:8]]
    return [p.read_bytes() for p in picks], [p.read_bytes() for p in photos]


def _stem(name: str) -> str:
    from neuralsim.runtime import file_stem

    return file_stem(name) + "_"


def _html(run: Learn, s: dict) -> str:
    def cell(v) -> str:
        return "–" if v is None else (f"{v:+.1f}" if isinstance(v, float) and v < 0 else str(v))

    rows = "".join(
        f"<tr><td>{html.escape(c)}</td><td>{cell(e['learned_ap'])}</td><td>{cell(e['dr_ap'])}</td>"
        f"<td>{e['gain']['mean']:+.1f}</td><td>{e['gain']['positive']}/{e['gain']['seeds']}</td>"
        f"<td>{cell(e['learned_ap50'])}</td><td>{cell(e['dr_ap50'])}</td></tr>" for c, e in s["per_class"].items())
    g = s["gain"]
    rows += (f"<tr class='all'><td>all</td><td>{s['ap']['learned']}</td><td>{s['ap']['dr']}</td><td>{g['mean']:+.1f}"
             f"</td><td>{g['positive']}/{g['seeds']}</td><td>{s['ap50']['learned']}</td><td>{s['ap50']['dr']}</td></tr>")
    seeds = "".join(f"<tr><td>{k}</td><td>{a}</td><td>{b}</td><td>{a - b:+.1f}</td></tr>"
                    for k, (a, b) in enumerate(zip(s["ap_per_seed"]["learned"], s["ap_per_seed"]["dr"])))
    tv = "".join(f"<tr><td>{html.escape(o)}</td>" + "".join(f"<td>{v}</td>" for v in fs.values()) + "</tr>"
                 for o, fs in s["psi_tv_from_uniform"].items())
    tv_head = "".join(f"<th>{f}</th>" for f in next(iter(s["psi_tv_from_uniform"].values())))
    times = "".join(f"<tr><td>{k}</td><td>{v:.0f}</td></tr>" for k, v in s["seconds"].items())
    learned, photos = _pictures(run)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>neuralsim learn: {html.escape(str(run.out))}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:first-child{{text-align:left}}tr.all{{font-weight:bold}}
img{{margin:2px;image-rendering:pixelated}}p.verdict{{background:#f4f4f0;padding:1em;border-left:4px solid #3a6ea5}}</style>
</head><body><h1>Learned data against domain randomisation</h1>
<p class="verdict">{html.escape(s['verdict'])}</p>
<h2>AP on the test photos (points, mean over {s['seeds']} seeds; gain = paired learned − DR)</h2>
<table><tr><th>class</th><th>AP learned</th><th>AP DR</th><th>gain</th><th>seeds &gt; 0</th><th>AP50 learned</th>
<th>AP50 DR</th></tr>{rows}</table>
<table><tr><th>seed</th><th>AP learned</th><th>AP DR</th><th>gain</th></tr>{seeds}</table>
<h2>What was learned</h2>{_img(_psi_figure(s), "learned psi")}
<p>Total-variation distance of each factor's learned distribution from uniform (0: unchanged, 1: all mass moved):</p>
<table><tr><th>object</th>{tv_head}</tr>{tv}</table>
<h2>Learned training images</h2>{"".join(_img(b, "learned sample", 160) for b in learned)}
<h2>Test photos (letterboxed to the working size)</h2>{"".join(_img(b, "test photo", 160) for b in photos)}
<h2>Time per stage (seconds)</h2><table>{times}</table>
</body></html>
"""
