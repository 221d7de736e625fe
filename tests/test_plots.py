"""The experiment plots say what they show: accuracy in % beside a majority or chance line, ticks at the
budgets measured, legends off the data, one y axis per panel, privacy points labelled with their strength."""

from __future__ import annotations

import pytest

from simulations.bench.report import plot_scaling
from simulations.effectiveness import plot as plot_effectiveness
from simulations.privacy_sweep import plot as plot_privacy
from simulations.suite import plot as plot_suite


def _labels(ax) -> list[str]:
    return [artist.get_label() for artist in [*ax.get_lines(), *ax.collections]]


def _no_legend_on_the_data(fig) -> None:
    assert fig.legends and all(ax.get_legend() is None for ax in fig.axes)


def test_suite_accuracy_has_the_chance_level_and_ticks_at_the_calls(tmp_path):
    def cell(method, domain, accuracy, chance):
        curve = [(18, accuracy - 0.1), (36, accuracy)] if method == "cbp" else [(0, accuracy)]
        return {"domain": domain, "method": method, "accuracy": accuracy, "curve": curve, "chance": chance}

    cells = [cell(m, d, 0.6, c) for d, c in (("commonsense", 0.5), ("medical", 0.25)) for m in ("zero-shot", "cbp")]
    for cell_ in cells:
        cell_.update(bytes_up=1000.0, bytes_down=100.0)
    figures = plot_suite(cells, tmp_path)
    bars = figures["accuracy"].axes[0]
    [chance] = [c for c in bars.collections if c.get_label() == "chance (1 / answers)"]
    assert sorted({round(y, 6) for segment in chance.get_segments() for _, y in segment}) == [25.0, 50.0]  # per domain
    assert max(patch.get_height() for patch in bars.patches) == pytest.approx(60.0)  # %
    for ax, level in zip(figures["accuracy_vs_calls"].axes, (50.0, 25.0)):
        assert list(ax.get_xticks()) == [18, 36]
        [line] = [line for line in ax.get_lines() if line.get_label() == "chance (1 / answers)"]
        assert list(line.get_ydata()) == [level, level]
    for figure in figures.values():
        _no_legend_on_the_data(figure)


def test_effectiveness_ticks_every_budget_and_keeps_the_majority_line_visible(tmp_path):
    rows = [
        {"domain": "commonsense", "task": "piqa", "backbone": "smollm2-135m", "seed": 0}
        | {"method": m, "calls": c, "test_accuracy": 0.6, "majority": 0.55}
        for m, calls in (("cbp", (50, 100, 200, 400)), ("bbt", (50, 100, 200, 400)), ("zero-shot", (0,)))
        for c in calls
    ]
    fig = plot_effectiveness(rows, tmp_path / "curves.png")
    ax = fig.axes[0]
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["50", "100", "200", "400"]  # 50 is not a power of 10
    [majority] = [line for line in ax.get_lines() if line.get_label() == "majority class"]
    assert list(majority.get_ydata()) == pytest.approx([55.0, 55.0])
    _no_legend_on_the_data(fig)


def test_bench_scaling_has_one_y_axis_per_panel(tmp_path):
    run = {"backbone": "tiny-random", "diagonal": True}
    runs = [
        run | {"users": u, "round_s": 0.2 * u, "forward_s": 0.05 * u, "framework_ms_per_message": 12.0}
        for u in (10, 30, 100)
    ]
    fig = plot_scaling({"runs": runs}, tmp_path / "scaling.png")
    seconds, framework = fig.axes  # no twinx: a third axes would share a panel
    assert seconds.get_ylabel() == "seconds per round" and framework.get_ylabel() == "ms per message"
    preset = "scale-300 preset (SST-2, federation section)"
    assert _labels(seconds)[:2] == [f"round, {preset}", f"BlackBox forward, {preset}"]
    line, forward = seconds.get_lines()[:2]
    assert line.get_color() == forward.get_color() == framework.get_lines()[0].get_color()  # one colour per preset
    assert list(framework.get_lines()[0].get_ydata()) == [12.0, 12.0, 12.0]
    assert [tick.get_text() for tick in seconds.get_xticklabels()] == ["10", "30", "100"]
    _no_legend_on_the_data(fig)


def test_privacy_points_are_labelled_with_their_strength_and_not_joined(tmp_path):
    def row(defence, gain, noise=0.0):
        attacks = {
            "label-selection": {"accuracy": 0.8, "majority_baseline": 0.5},
            "membership": {"auc": 0.6, "tpr_at_1%_fpr": 0.02},
            "attribute": {"accuracy": 0.7, "chance": 0.5},
        }
        gain = {"gain": gain, "ci95": [gain - 0.04, gain + 0.05], "texts": 200}
        return {"defence": defence, "gain_over_start": gain, "settings": {"dp-noise": noise}, "attacks": attacks}

    # sweep order 4, 0.2, 1 and gains that do not fall with strength: a line would zig-zag
    rows = [row("none", 0.06), row("dp", 0.07, 4.0), row("dp", 0.03, 0.2), row("dp", 0.05, 1.0)]
    fig = plot_privacy(rows, tmp_path / "privacy.png")
    for ax in fig.axes:
        [dp] = [c for c in ax.containers if c.get_label() == "dp (noise multiplier)"]
        points = dp.lines[0]
        assert points.get_linestyle() == "None"
        assert list(points.get_xdata()) == pytest.approx([3.0, 5.0, 7.0])  # weakest first, gain in points
        assert [text.get_text() for text in ax.texts] == ["0.2", "1", "4"]
        low, high = dp.lines[2][0].get_segments()[0][:, 0]  # the first point's interval: -4 / +5 points
        assert (low, high) == pytest.approx((-1.0, 8.0))
    _no_legend_on_the_data(fig)
