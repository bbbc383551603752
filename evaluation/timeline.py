"""The PNG timeline: failure rate per region over event time, incidents and alerts.

One panel per region: the per-minute failure rate (from the metrics output),
the threshold, labelled incident spans (failure spikes red, traffic drops
blue, near misses hatched), FAILURE_RATE / TRAFFIC_DROP OPEN and RESOLVED
markers, and the per-minute volume on a second axis (a traffic drop shows as
a dip). A last panel puts the user and transaction alerts on the same time
axis: labels as grey ticks, correct alerts as dots, false alerts as red
crosses.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import UTC, datetime
from pathlib import Path

from evaluation.matching import REGION_TYPES, epoch

_USER_TYPES = ("VELOCITY", "AMOUNT_SPIKE", "IMPOSSIBLE_TRAVEL", "FRAUD_SUSPECTED")
_SPAN_COLOURS = {"FAILURE_RATE": "#d62728", "TRAFFIC_DROP": "#1f77b4"}


def _dt(iso: str) -> datetime:
    return datetime.fromtimestamp(epoch(iso), UTC)


def render(
    path: Path,
    metrics: Iterable[dict],
    alerts: Iterable[dict],
    labels: Iterable[dict],
    threshold_percent: float,
    title: str,
    false_ids: Collection[str] = (),
) -> Path:
    """Write the timeline PNG to ``path``.

    :arg false_ids: ``alert_id`` of the alerts the matching judged false.

    :raises ImportError: with the install hint when matplotlib is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.dates as mdates
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - dev dependency
        raise ImportError("the timeline needs matplotlib: pip install -r requirements-dev.txt") from exc

    metrics = list(metrics)
    alerts = list(alerts)
    labels = list(labels)
    regions = sorted({m["region"] for m in metrics})
    fig, axes = plt.subplots(
        len(regions) + 1,
        1,
        figsize=(16, 2.6 * len(regions) + 3.2),
        sharex=True,
        gridspec_kw={"height_ratios": [3] * len(regions) + [2]},
    )
    for ax, region in zip(axes, regions, strict=False):
        rows = sorted((m for m in metrics if m["region"] == region), key=lambda m: m["window_start"])
        times = [_dt(m["window_start"]) for m in rows]
        volume = ax.twinx()
        volume.fill_between(times, [m["count"] for m in rows], step="post", color="#bbbbbb", alpha=0.35, lw=0)
        volume.set_ylabel("events / min", fontsize=8, color="#777777")
        volume.tick_params(labelsize=7, colors="#777777")
        volume.set_ylim(bottom=0)
        ax.set_zorder(volume.get_zorder() + 1)
        ax.patch.set_visible(False)
        ax.step(
            times,
            [m["failure_rate"] for m in rows],
            where="post",
            color="black",
            lw=1.0,
            label="failure rate % (1-min)",
        )
        ax.axhline(threshold_percent, color="#d62728", ls="--", lw=1, label=f"threshold {threshold_percent}%")
        for lab in labels:
            if lab["type"] in REGION_TYPES and lab["key"] == region:
                ax.axvspan(
                    _dt(lab["start"]),
                    _dt(lab["end"]),
                    color=_SPAN_COLOURS[lab["type"]],
                    alpha=0.18 if lab["expected"] else 0.08,
                    hatch=None if lab["expected"] else "//",
                    lw=0,
                )
        top = max([m["failure_rate"] for m in rows] + [threshold_percent * 2])
        for alert in alerts:
            if alert["type"] not in REGION_TYPES or alert["key"] != region:
                continue
            y = alert["value"] if alert["type"] == "FAILURE_RATE" else top * 0.92
            marker = "^" if alert["state"] == "OPEN" else "v"
            ax.plot(
                _dt(alert["event_time"]),
                y,
                marker=marker,
                ms=8,
                ls="none",
                color=_SPAN_COLOURS[alert["type"]],
                mec="black",
                mew=0.6,
            )
        ax.set_ylim(0, top * 1.05)
        ax.set_ylabel(f"{region}\nfailure %", fontsize=9)
        ax.grid(alpha=0.25)
    handles = [
        plt.Line2D([], [], color="black", lw=1, label="failure rate % per minute"),
        plt.Line2D([], [], color="#d62728", ls="--", label=f"threshold {threshold_percent}%"),
        plt.Rectangle((0, 0), 1, 1, color="#d62728", alpha=0.2, label="failure spike (label)"),
        plt.Rectangle((0, 0), 1, 1, color="#1f77b4", alpha=0.2, label="traffic drop (label)"),
        plt.Rectangle((0, 0), 1, 1, fc="white", ec="grey", hatch="//", label="near miss (no alert expected)"),
        plt.Line2D([], [], marker="^", ls="none", color="grey", mec="black", label="OPEN (red: failure, blue: drop)"),
        plt.Line2D([], [], marker="v", ls="none", color="grey", mec="black", label="RESOLVED"),
        plt.Rectangle((0, 0), 1, 1, color="#bbbbbb", alpha=0.35, label="events / min (right axis)"),
    ]
    axes[0].legend(handles=handles, loc="upper left", fontsize=7, ncol=4, framealpha=0.9)

    ax = axes[-1]
    for row, alert_type in enumerate(_USER_TYPES):
        ticks = [_dt(lab["start"]) for lab in labels if lab["type"] == alert_type and lab["expected"]]
        ax.plot(ticks, [row] * len(ticks), marker="|", ms=14, ls="none", color="#999999")
        near = [_dt(lab["start"]) for lab in labels if lab["type"] == alert_type and not lab["expected"]]
        ax.plot(near, [row + 0.25] * len(near), marker="|", ms=8, ls="none", color="#ff9896")
        hits: list[datetime] = []
        misses: list[datetime] = []
        for alert in alerts:
            if alert["type"] == alert_type and alert["state"] == "OPEN":
                (misses if alert["alert_id"] in false_ids else hits).append(_dt(alert["event_time"]))
        ax.plot(hits, [row] * len(hits), marker="o", ms=4, ls="none", color="#2ca02c")
        ax.plot(misses, [row] * len(misses), marker="x", ms=9, ls="none", color="#d62728", mew=2)
    ax.set_yticks(range(len(_USER_TYPES)), _USER_TYPES, fontsize=8)
    ax.set_ylim(-0.6, len(_USER_TYPES) - 0.2)
    ax.grid(alpha=0.25)
    ax.legend(
        handles=[
            plt.Line2D([], [], marker="|", ms=12, ls="none", color="#999999", label="incident (label)"),
            plt.Line2D([], [], marker="|", ms=8, ls="none", color="#ff9896", label="near miss"),
            plt.Line2D([], [], marker="o", ms=4, ls="none", color="#2ca02c", label="alert, correct"),
            plt.Line2D([], [], marker="x", ms=8, ls="none", color="#d62728", mew=2, label="alert, false"),
        ],
        loc="upper left",
        fontsize=7,
        ncol=4,
        framealpha=0.9,
    )
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=UTC))
    ax.set_xlabel("event time (UTC)")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
