"""The report as a page: the verdict card first (verdict, why, each site, the calibration's error
rate and interval, rendered from the verdict dict's fields by name), the runs' figures numbered at
full width, each test's detail and figure folded; and percent axes in plain percent."""
from __future__ import annotations

import copy
import html
import json
import re

from channels.plotting import plt
from experiments.report.card import calibration_text, verdict_card
from experiments.report.document import Figure, render_html, render_markdown
from experiments.report.figures import _remaining_axis
from experiments.report.verdict import verdict_document

CALIBRATION = {"instances": [], "errors": ["c"], "error_rate": 0.2, "error_interval": [0.005, 0.716],
               "verdict_errors": {"wrong": 1, "total": 5, "rate": 0.2, "interval": [0.005, 0.716]},
               "date": "2026-12-01", "seeds": 5, "population_seed": 7,
               "confusion": {"verdict": {"channels": {"channels": 2, "subcircuits": 0}}}}


def _report(seeds_run):
    report = seeds_run[1] / "report"
    result = json.loads((report / "verdict.json").read_text())
    figures = [Figure(p.stem, p, f"caption of {p.stem}") for p in sorted((report / "figures").glob("*.png"))]
    return result, figures


def test_the_card_comes_first_and_says_what_the_verdict_dict_says(seeds_run):
    result, figures = _report(seeds_run)
    result = copy.deepcopy(result)
    result.update(verdict="mixed", why="subcircuits at the input, channels at act.0", calibration=CALIBRATION,
                  sites={"input": {"reading": "subcircuits", "provisional_reading": "subcircuits",
                                   "tests": {"T1": "subcircuits"}, "new_field": 1},
                         "act.0": {"reading": "inconclusive", "provisional_reading": "channels", "tests": {}}})
    page = render_html(verdict_document(result, figures))
    card = page.index("<section class='card mixed'>")
    assert card < page.index("<figure>") and card < page.index("<h2>")
    assert "<div class='headline mixed'>mixed</div>" in page
    assert "subcircuits at the input, channels at act.0" in page[card:page.index("<figure>")]
    assert "<dt>site input</dt><dd class='subcircuits'>subcircuits (T1: subcircuits)</dd>" in page
    assert "<dt>site act.0</dt><dd class='inconclusive'>inconclusive (with provisional readings: channels)</dd>" in page
    assert "20% [0%, 72%] on 5 planted world instances (ltc calibrate, 2026-12-01, 5 seeds each)" in page
    assert "4 (2 init seeds: 0, 1)" in page
    markdown = render_markdown(verdict_document(result, figures))
    assert markdown.splitlines()[2] == "> **Verdict: mixed**" and "> - site act.0: inconclusive (with provisional readings: channels)" in markdown


def test_figures_are_numbered_and_each_test_is_folded_with_its_figure(seeds_run):
    result, figures = _report(seeds_run)
    page = render_html(verdict_document(result, figures))
    captions = re.findall(r"<figcaption><b>Figure (\d+)\.</b> caption of (\w+)</figcaption>", page)
    assert [int(n) for n, _ in captions] == list(range(1, len(figures) + 1))
    runs_figures = [name for _, name in captions if name not in result["tests"]]
    assert runs_figures[0] == "accuracy" and captions.index(("1", "accuracy")) == 0
    folded = re.findall(r"<details><summary>(.*?)</summary>(.*?)</details>", page, re.DOTALL)
    titles = [title for title, _ in folded]
    for key, test in result["tests"].items():
        (body,) = [b for t, b in folded if t.startswith(html.escape(f"{key} {test['title']}"))]
        assert f"statistic: {html.escape(test['statistic'])}" in body
        assert (f"caption of {key}</figcaption>" in body) == any(f.name == key for f in figures)
    assert "Runs" in titles
    first_test = page.index("<details><summary>T0")
    assert all(page.index(f"caption of {name}<") < first_test for name in runs_figures)


def test_the_card_without_calibration_or_interval():
    assert calibration_text(None) == "not measured: run `ltc calibrate`"
    assert calibration_text({"error_rate": 0.0, "date": "d", "seeds": 3}) == \
        "0% on planted worlds (ltc calibrate, d, 3 seeds each)"
    card = verdict_card({"verdict": "no ticket", "why": "the ticket is no better than random pruning"})
    assert (card.headline, card.css_class, card.facts[-1][0]) == ("no ticket", "no_ticket", "calibration error rate")


def test_weights_remaining_ticks_are_plain_percent_at_the_levels():
    fig, ax = plt.subplots()
    remaining = [100.0, 68.0, 46.24, 31.44, 21.38, 14.54]
    ax.plot(remaining, [0.6] * len(remaining))
    _remaining_axis(ax, remaining)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["14.5%", "21.4%", "31.4%", "46.2%", "68%", "100%"]
    assert not any(t.get_text() for t in ax.get_xticklabels(minor=True))
    left, right = ax.get_xlim()
    assert left > 100 and right < 14.5  # dense on the left, sparsest on the right
    plt.close(fig)
