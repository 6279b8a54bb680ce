"""Self-contained HTML reports (figures embedded as PNG data, opens offline) and the standard plots:
ψ over the outer steps against the target distribution (paper Fig. 6), AP per method (Fig. 4),
per-class AP tables (Table 1), generated samples, time and memory per step."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from neuralsim.runtime import atomic_write_bytes, atomic_write_text, file_stem

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.8em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}figure{margin:1em 0}
figcaption{color:#555;font-size:.9em}.summary{background:#f6f8fb;border-left:4px solid #2a58b0;padding:.6em 1em}
"""


def figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


class Report:
    """An HTML page built section by section; figures are also written as PNG files beside it."""

    def __init__(self, title: str):
        self.title = title
        self.parts: list[str] = []
        self.figures: dict[str, bytes] = {}

    def heading(self, text: str) -> None:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def paragraph(self, text: str, summary: bool = False) -> None:
        cls = ' class="summary"' if summary else ""
        self.parts.append(f"<p{cls}>{html.escape(text)}</p>")

    def figure(self, name: str, fig, caption: str = "") -> None:
        """Add a figure; its file is `name`.png, `name` made a plain file name (it may hold a class's name)."""
        png = figure_png(fig)
        self.figures[f"{file_stem(name)}.png"] = png
        data = base64.b64encode(png).decode("ascii")
        self.parts.append(f'<figure><img src="data:image/png;base64,{data}" style="max-width:100%" alt="{html.escape(name)}">'
                          f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    def table(self, header: list[str], rows: list[list[Any]], caption: str = "") -> None:
        def cell(v: Any) -> str:
            return f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))

        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        self.parts.append(f"<table>{cap}<tr>{head}</tr>{body}</table>")

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        for name, png in self.figures.items():
            atomic_write_bytes(folder / name, png)
        page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<style>{STYLE}</style></head><body><h1>{html.escape(self.title)}</h1>{''.join(self.parts)}</body></html>")
        return atomic_write_text(folder / "report.html", page)


def plot_psi_history(history: list[np.ndarray], target: np.ndarray | None, title: str, bin_labels: list[str]):
    """Left: bin probabilities over outer steps (heat map). Right: first and last ψ against the target."""
    h = np.asarray(history)  # (steps, k)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.0), gridspec_kw={"width_ratios": [1.4, 1]})
    im = ax0.imshow(h.T, aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=1,
                    extent=(-0.5, len(h) - 0.5, -0.5, h.shape[1] - 0.5))
    ax0.set_yticks(range(h.shape[1]), bin_labels, fontsize=7)
    ax0.set_xlabel("outer step")
    ax0.set_title(f"{title}: ψ over steps", fontsize=10)
    fig.colorbar(im, ax=ax0, fraction=0.04)
    x = np.arange(h.shape[1])
    width = 0.28
    ax1.bar(x - width, h[0], width, label="ψ first", color="#bbbbbb")
    ax1.bar(x, h[-1], width, label="ψ last", color="#2a58b0")
    if target is not None:
        ax1.bar(x + width, target, width, label="test", color="#e07a1a")
    ax1.set_xticks(x, bin_labels, fontsize=7, rotation=45)
    ax1.set_ylim(0, 1)
    ax1.legend(fontsize=7)
    ax1.set_title("first / last ψ vs test distribution", fontsize=10)
    return fig


def plot_curves(steps: list[int], series: dict[str, list[float]], ylabel: str, title: str):
    fig, ax = plt.subplots(figsize=(6, 3))
    for name, values in series.items():
        ax.plot(steps[: len(values)], values, marker="o", ms=3, label=name)
    ax.set_xlabel("outer step")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def plot_method_bars(groups: list[str], methods: list[str], values: list[list[list[float]]], ylabel: str, title: str):
    """Grouped bars (groups × methods) — the paper's Fig. 4 as bars per initialisation. `values[g][m]` holds one value
    per seed: the bar is their mean, each seed a dot on it, and the error bar (± std) is drawn where there are two
    or more."""
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(groups) * len(methods) / 2), 3.2))
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        x = np.arange(len(groups)) + (i - (len(methods) - 1) / 2) * width
        cells = [values[g][i] for g in range(len(groups))]
        mean = [np.mean(c) if c else np.nan for c in cells]
        std = [np.std(c) if len(c) > 1 else np.nan for c in cells]
        ax.bar(x, mean, width, yerr=std, capsize=3, label=m)
        for xi, c in zip(x, cells):
            ax.plot(np.full(len(c), xi), c, "o", ms=3, color="black", alpha=0.6)
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title + " (dots: seeds)", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return fig


def image_grid(images: list[np.ndarray], captions: list[str], columns: int = 8, title: str = ""):
    """A grid of RGB images (H, W, 3) in [0, 1] with small captions."""
    rows = max(1, -(-len(images) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.4 * columns, 1.55 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, cap in zip(axes.ravel(), images, captions):
        ax.imshow(np.clip(img, 0, 1))
        ax.set_title(cap, fontsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
