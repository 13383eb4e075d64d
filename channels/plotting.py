"""matplotlib for files only (Agg backend, no display needed) and the one way figures are written."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def save_figure(fig, path: Path) -> Path:
    """Lay out, write `path` (PNG at 150 dpi, folders created) and free the figure; returns path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path
