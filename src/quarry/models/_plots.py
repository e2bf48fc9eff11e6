"""Charts a researcher looks at after a training: daily Rank IC per segment."""

from __future__ import annotations

from pathlib import Path

import polars as pl

__all__ = ["ic_plot"]


def ic_plot(scored: dict[str, pl.DataFrame], path: Path, *, label: str = "LABEL0") -> None:
    """Daily Rank IC and its 20-day mean for each segment, one row of charts, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    from quarry.signals import daily_ic

    fig, axes = plt.subplots(1, len(scored), figsize=(5 * len(scored), 3.2), squeeze=False)
    for ax, (name, frame) in zip(axes[0], scored.items(), strict=True):
        daily = daily_ic(frame, score="score", label=label).sort("date")
        dates = daily["date"].to_list()
        ic = daily["rank_ic"].to_numpy()
        # one line per day in a single collection: a bar chart of 1,400 days draws 1,400
        # patches and took seconds of a training's time
        ax.vlines(dates, 0.0, ic, colors="#9ab", linewidth=1.0, label="daily Rank IC")
        smooth = daily["rank_ic"].rolling_mean(20, min_samples=1).to_numpy()
        ax.plot(dates, smooth, color="#135", label="20-day mean")
        ax.axhline(0, color="black", linewidth=0.5)
        valid = daily["rank_ic"].drop_nulls().to_numpy()
        ax.set_title(f"{name}: mean Rank IC {valid.mean() if valid.size else 0.0:.4f}")
        ax.tick_params(axis="x", labelrotation=30)
    axes[0][0].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
