"""`rebal backtest --plot`: the equity curves, the drift over time and the fees/tracking-error frontier.

OUT.html is one self-contained page drawn by Plotly, as the dashboard draws its charts: plotly.js is
embedded from the `plotly` wheel (no CDN, works offline). OUT.png draws the same three charts with
matplotlib, an optional dependency (`rebal-cli[png]`): a static image without a browser (Plotly's own
PNG export, kaleido, drives a Chrome it would have to find or download).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rebal.core.backtest import Comparison, History, Outcome
from rebal_cli.support import fail

TITLES = ("Portfolio value", "Largest wallet drift (percentage points)", "Fees against tracking error")


def _outcomes(result: Comparison) -> list[Outcome]:
    return [*result.policies, result.baseline, result.buy_and_hold]


def write_plot(path: Path, result: Comparison, history: History) -> None:
    """Write the charts to `path` (.html or .png); exit 2 when PNG is asked for without matplotlib."""
    dates = [datetime.fromtimestamp(int(t), UTC) for t in history.times.tolist()]
    if path.suffix.lower() == ".png":
        _png(path, result, dates, history.quote)
    else:
        _html(path, result, dates, history.quote)


def _html(path: Path, result: Comparison, dates: list[datetime], quote: str) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=3, cols=1, subplot_titles=TITLES, vertical_spacing=0.08)
    for outcome in _outcomes(result):
        run = outcome.run
        figure.add_trace(go.Scatter(x=dates, y=run.value, name=outcome.name, legendgroup=outcome.name), 1, 1)
        if outcome is not result.baseline:
            figure.add_trace(
                go.Scatter(
                    x=dates, y=run.drift * 100, name=outcome.name, legendgroup=outcome.name, showlegend=False
                ),
                2,
                1,
            )
    frontier = [outcome for outcome in _outcomes(result) if outcome is not result.baseline]
    figure.add_trace(
        go.Scatter(
            x=[o.figures.tracking_error * 100 for o in frontier],
            y=[o.figures.fees for o in frontier],
            text=[o.name for o in frontier],
            mode="markers+text",
            textposition="top center",
            showlegend=False,
        ),
        3,
        1,
    )
    figure.update_yaxes(title_text=quote, type="log", row=1, col=1)
    figure.update_yaxes(title_text="pp", row=2, col=1)
    figure.update_xaxes(title_text="tracking error, % a year", row=3, col=1)
    figure.update_yaxes(title_text=f"fees, {quote}", range=[0, fee_axis_top(frontier)], row=3, col=1)
    figure.update_layout(height=1200, title="rebal backtest")
    figure.write_html(str(path), include_plotlyjs=True, full_html=True)


def fee_axis_top(outcomes: list[Outcome]) -> float:
    """The top of the frontier's fee axis, which starts at 0 (fees are never negative): a little above
    the largest fee, or 1 when every fee is 0 (an axis centred on 0 showed negative fees)."""
    largest = max((o.figures.fees for o in outcomes), default=0.0)
    return largest * FEE_AXIS_HEADROOM if largest > 0 else 1.0


# The fee axis reaches this many times the largest fee: room above the highest point for its name.
FEE_AXIS_HEADROOM = 1.15


def _png(path: Path, result: Comparison, dates: list[datetime], quote: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        fail(f"--plot: {path}: a PNG needs matplotlib (install rebal-cli[png]), or write OUT.html")
    figure = png_figure(result, dates, quote)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def png_figure(result: Comparison, dates: list[datetime], quote: str) -> Any:
    """The three charts as a matplotlib figure (`_png` saves it)."""
    import matplotlib.pyplot as plt

    figure, (equity, drift, frontier) = plt.subplots(3, 1, figsize=(11, 14))
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colour = {o.name: cycle[i % len(cycle)] for i, o in enumerate(_outcomes(result))}  # one per outcome
    for outcome in _outcomes(result):
        equity.plot(dates, outcome.run.value, label=outcome.name, color=colour[outcome.name])
        if outcome is not result.baseline:
            drift.plot(dates, outcome.run.drift * 100, label=outcome.name, color=colour[outcome.name])
    points: list[Any] = [o for o in _outcomes(result) if o is not result.baseline]
    for outcome in points:
        x, y = outcome.figures.tracking_error * 100, outcome.figures.fees
        frontier.scatter([x], [y], color=colour[outcome.name])
        frontier.annotate(outcome.name, (x, y), textcoords="offset points", xytext=(4, 4))
    frontier.set_ylim(0, fee_axis_top(points))
    equity.set_yscale("log")
    equity.set_ylabel(quote)
    drift.set_ylabel("pp")
    frontier.set_xlabel("tracking error, % a year")
    frontier.set_ylabel(f"fees, {quote}")
    for axes, title in zip((equity, drift, frontier), TITLES, strict=True):
        axes.set_title(title)
    equity.legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    return figure


def write_curves(path: Path, curves: dict[str, Any], stamps: Any) -> None:
    """The growth of 1 for each named curve (the optimizer's walk forward), as HTML or PNG."""
    if path.suffix.lower() == ".png":
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            fail(f"--plot: {path}: a PNG needs matplotlib (install rebal-cli[png]), or write OUT.html")
        figure, axes = plt.subplots(figsize=(11, 6))
        for name, curve in curves.items():
            axes.plot(stamps.astype("datetime64[s]"), curve, label=name)
        axes.set_title("Out of sample: growth of 1")
        axes.legend(loc="upper left", fontsize="small")
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        plt.close(figure)
        return
    import plotly.graph_objects as go

    dates = [datetime.fromtimestamp(int(t), UTC) for t in stamps.tolist()]
    figure = go.Figure([go.Scatter(x=dates, y=curve, name=name) for name, curve in curves.items()])
    figure.update_layout(title="rebal backtest --strategies: out of sample, growth of 1", height=600)
    figure.write_html(str(path), include_plotlyjs=True, full_html=True)
