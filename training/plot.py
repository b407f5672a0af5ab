"""Rate-distortion plots from results JSON files (Matplotlib, training side only)."""

from __future__ import annotations

from pathlib import Path

from qaft.training.bdrate import load_curve


def plot_rd(files: list[str | Path], out: str | Path, title: str = "Kodak") -> Path:
    """PSNR-RGB against bpp for each results file, one line each, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    for f in files:
        c = load_curve(f)
        pts = sorted(zip(c["bpp"], c["psnr-rgb"]))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=c["name"])
    ax.set_xlabel("bits per pixel (file size)")
    ax.set_ylabel("PSNR-RGB (dB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_xlim(0, 1.7)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return Path(out)
