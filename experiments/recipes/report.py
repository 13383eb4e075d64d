"""`ltc report`: the ticket tests T1..T6 on one or more run directories, the verdict, and a report.

Writes `report/` (of the first run dir, or `--out`): `index.html` (self-contained, figures
inlined), `report.md`, `verdict.json` and `figures/*.png`; logs a W&B summary run
(job_type=summary) beside the level runs; prints the verdict table.
"""
from __future__ import annotations

import base64
import html
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from channels.covariance import rows_from_activation
from channels.rundata import RunData, load_run
from channels.sites import run_sites
from channels.stability import stability_rows, stability_summary
from channels.tickets import CHANNELS, SUBCIRCUITS, run_tests, verdict
from experiments.config import base_parser, identity, instantiate, parse
from experiments.report_figures import Figure, all_figures
from experiments.settings import WandbConfig
from lth import rundir
from lth.errors import LTCError
from lth.rundir import config_hash

console = Console(highlight=False)
READING_STYLE = {CHANNELS: "bold green", SUBCIRCUITS: "bold magenta", "inconclusive": "yellow", "not run": "dim"}


def build_parser():
    parser = base_parser("ltc report", "The ticket tests (T1..T6) of one or more runs, their verdict and a report.")
    parser.add_argument("--run_dir", type=str, nargs="+", required=True,
                        help="run directories written by `ltc imp` (several seeds / data orders of one config)")
    parser.add_argument("--out", type=str | None, default=None,
                        help="report directory (default: <first run dir>/report)")
    parser.add_argument("--n_boot", type=int, default=2000, help="bootstrap resamples of the intervals over seeds")
    parser.add_argument("--wandb.mode", type=str | None, default=None,
                        help="offline (default), online or disabled: the W&B summary run")
    return parser


# ---- activations on the probe set, for the tests that compare networks of different inits ----------

class ProbeActivations:
    """Site activations of a run's networks (a level's trained weights, or "init") on one shared probe.

    Networks are rebuilt from each run's config.yaml; the probe is the first run's. None is
    returned by `for_runs` when the configs cannot be rebuilt (e.g. hand-written run dirs).
    """

    def __init__(self, parser, configs: dict[RunData, object], probe, sites: list[str]) -> None:
        self.parser, self.configs, self.probe, self.sites = parser, configs, probe, sites
        self.cache: dict[tuple[int, object], dict[str, np.ndarray]] = {}
        self.nets: dict[int, torch.nn.Module] = {}

    @classmethod
    def for_runs(cls, runs: Sequence[RunData]) -> ProbeActivations | None:
        from experiments.recipes.imp import build_parser as imp_parser
        from experiments.recipes.imp import probe_inputs

        parser = imp_parser()
        try:
            configs = {run: parse(parser, ["--config", str(run.dir / "config.yaml")]) for run in runs}
            first = instantiate(parser, configs[runs[0]])
        except LTCError:
            return None
        sites = list(first.spectra.sites)
        if not sites:
            return None
        return cls(parser, configs, probe_inputs(first.data, first.spectra.probe_size), sites)

    def __call__(self, run: RunData, which) -> dict[str, np.ndarray]:
        key = (id(run), which)
        if key not in self.cache:
            if id(run) not in self.nets:
                self.nets[id(run)] = instantiate(self.parser, self.configs[run]).model.net
            net = self.nets[id(run)]
            net.load_state_dict(run.init_weights() if which == "init" else run.levels[which].weights)
            net.eval()
            with torch.no_grad():
                acts = run_sites(net, self.probe, self.sites)
            self.cache[key] = {name: rows_from_activation(a, 1 if a.ndim == 4 else None).double().numpy()
                               for name, a in acts.items()}
        return self.cache[key]


# ---- the report ---------------------------------------------------------------------------------

def experiment_id(run: RunData) -> str:
    """`<experiment>-<hash8>` as `ltc imp` computes it (the W&B group), or the dir name."""
    from experiments.recipes.imp import build_parser as imp_parser

    try:
        cfg = parse(imp_parser(), ["--config", str(run.dir / "config.yaml")])
    except LTCError:
        return run.dir.name
    return f"{cfg.experiment}-{config_hash(identity(cfg))}"


def group_id(experiment: str, run_ids: list[str]) -> str:
    """The W&B group of a report: the run's experiment id, or one id for a set of runs."""
    return run_ids[0] if len(run_ids) == 1 else f"{experiment}-seeds-{config_hash(sorted(run_ids))}"


def _load(run_dirs: Sequence[Path]) -> list[RunData]:
    if not run_dirs:
        raise LTCError("no run directory given; pass --run_dir DIR [DIR ...]")
    runs = [load_run(d) for d in run_dirs]
    names = [set(r.dense.mask) for r in runs]
    if any(n != names[0] for n in names):
        raise LTCError("the run directories prune different parameters: pass runs of one config (other seeds only)")
    seen = {}
    for run in runs:
        if (run.seed, run.data_order_seed) in seen:
            raise LTCError(f"{run.dir} and {seen[(run.seed, run.data_order_seed)]} have the same seed and data order; "
                           "pass each run once")
        seen[(run.seed, run.data_order_seed)] = run.dir
    return runs


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value + 0.0:.{digits}f}".replace("-0.000", "0.000") if digits == 3 else f"{value + 0.0:.{digits}f}"
    return str(value)


def _effect_text(test: dict) -> str:
    lo, hi = test["ci"]
    text = _fmt(test["effect"])
    return text if lo is None else f"{text} [{_fmt(lo)}, {_fmt(hi)}]"


def verdict_rows(result: dict) -> list[list[str]]:
    """Test, what it measures, effect [95% CI], seeds, null, reading, rule: one row per test."""
    rows = []
    for name, test in result["tests"].items():
        reading = test["reading"] + (" (provisional)" if test["provisional"] else "")
        rows.append([name, test["title"], test["statistic"], _effect_text(test), str(len(test["units"])),
                     test["null"], reading, test["rule"]])
    return rows


VERDICT_HEADERS = ["test", "title", "statistic", "effect [95% CI]", "seeds", "null", "reading", "rule"]


def _detail_tables(test: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """Each test's per-level / per-pair numbers as (caption, headers, rows)."""
    d = test["details"]
    if test["test"] == "T1" and d.get("signature"):
        cols = ["level", "density", "line", "spectrum", "effective_rank", "participation_ratio", "top1_share", "shape"]
        return [("spectral signature (mean over runs)", cols, [[_fmt(r[c]) for c in cols] for r in d["signature"]])]
    if test["test"] == "T2" and d.get("overlap_with_dense"):
        cols = ["level", "line", "spectrum", "overlap_excess", "n"]
        return [("top-k overlap with the dense network, chance-corrected", cols,
                 [[_fmt(r[c]) for c in cols] for r in d["overlap_with_dense"]])]
    if test["test"] == "T3" and d.get("pairs"):
        cols = ["a", "b", "kind", "level", "density", "identity", "similarity", "effect"]
        rows = []
        for p in d["pairs"]:
            ious = "; ".join(f"{n} {_fmt(v['iou'], 2)} ({_fmt(v['chance'], 2)})" for n, v in p["mask_iou"].items())
            rows.append([_fmt(p[c]) for c in cols] + [ious])
        steps = ["kind", "level", "density", "identity", "similarity", "n"]
        return [("pairs of tickets", [*cols, "mask IoU per layer (chance)"], rows),
                ("identity and similarity per level, mean over pairs of a kind", steps,
                 [[_fmt(t[c]) for c in steps] for t in d["trajectory"]])]
    if test["test"] == "T4" and d.get("per_level"):
        cols = ["level", "density", "spectrum", "share", "null_mean", "score", "p_value", "n"]
        return [("localisation per level (mean over runs)", cols, [[_fmt(r[c]) for c in cols] for r in d["per_level"]])]
    if test["test"] in ("T5", "T6") and d.get("gaps"):
        cols = [c for c in ("level", "control", "gap", "min", "max", "n") if c in d["gaps"][0]]
        return [("accuracy gaps, ticket minus control", cols, [[_fmt(r[c]) for c in cols] for r in d["gaps"]])]
    return []


STABILITY_HEADERS = ["run", "level", "density", "start", "barrier", "rise_above_chord", "error_a", "error_b", "stable"]


def stability_table(result: dict) -> list[list[str]]:
    """The instability branch per run and level: barrier and the two copies' test errors."""
    return [[("yes" if r[c] else "no") if c == "stable" else _fmt(r[c]) for c in STABILITY_HEADERS]
            for r in result["stability"]["rows"]]


def _scalars(test: dict) -> str:
    """The single numbers a reading's rule uses besides the effect (gates, means), as text."""
    return ", ".join(f"{k} {_fmt(v)}" for k, v in test["details"].items() if isinstance(v, (int, float)) or v is None)


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _markdown(result: dict, figures: list[Figure]) -> str:
    lines = [f"# Lottery tickets: channels or subcircuits? ({result['experiment']})", ""]
    lines += [f"**Verdict: {result['verdict']}** (score {result['score']:+.2f}"
              f"{', provisional: one seed' if result['provisional'] else ''}). How: {result['rule']}.", ""]
    lines += [_md_row(VERDICT_HEADERS), "|" + "---|" * len(VERDICT_HEADERS)]
    lines += [_md_row(row) for row in verdict_rows(result)]
    lines += ["", "## Runs", ""]
    lines += [f"- `{r['dir']}`: seed {r['seed']}, data order {r['data_order_seed']}, levels {r['levels']}, "
              f"controls {', '.join(r['branches']) or 'none'}" for r in result["runs"]]
    lines += ["", "## Stability (linear mode connectivity)", "", result["stability"]["summary"] + ".", ""]
    if result["stability"]["rows"]:
        lines += [_md_row(STABILITY_HEADERS), "|" + "---|" * len(STABILITY_HEADERS)]
        lines += [_md_row(row) for row in stability_table(result)]
    lines += ["", "## Figures", ""]
    lines += [f"![{f.caption}](figures/{f.path.name})\n\n{f.caption}\n" for f in figures]
    for test in result["tests"].values():
        lines += ["", f"## {test['test']} {test['title']}: {test['reading']}", "",
                  f"- statistic: {test['statistic']}", f"- null: {test['null']}", f"- rule: {test['rule']}",
                  f"- effect: {_effect_text(test)} over {len(test['units'])} seed(s): "
                  + ", ".join(f"{k} {_fmt(v)}" for k, v in test["units"].items())]
        if test["note"]:
            lines.append(f"- note: {test['note']}")
        lines += [f"- {story}" for story in test["details"].get("shapes", [])]
        if _scalars(test):
            lines.append(f"- values: {_scalars(test)}")
        for caption, headers, rows in _detail_tables(test):
            lines += ["", f"{caption}:", "", _md_row(headers), "|" + "---|" * len(headers)]
            lines += [_md_row(row) for row in rows]
    return "\n".join(lines) + "\n"


def _html_table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html(result: dict, figures: list[Figure]) -> str:
    esc = html.escape
    parts = [f"<h1>Lottery tickets: channels or subcircuits? <small>{esc(result['experiment'])}</small></h1>",
             f"<p class='verdict {esc(result['verdict'])}'>Verdict: <b>{esc(result['verdict'])}</b> "
             f"(score {result['score']:+.2f}{', provisional: one seed' if result['provisional'] else ''})</p>",
             f"<p>How: {esc(result['rule'])}.</p>", _html_table(VERDICT_HEADERS, verdict_rows(result)),
             "<h2>Runs</h2><ul>"]
    parts += [f"<li><code>{esc(r['dir'])}</code>: seed {r['seed']}, data order {r['data_order_seed']}, levels "
              f"{r['levels']}, controls {esc(', '.join(r['branches']) or 'none')}</li>" for r in result["runs"]]
    parts.append(f"</ul><h2>Stability (linear mode connectivity)</h2><p>{esc(result['stability']['summary'])}.</p>")
    if result["stability"]["rows"]:
        parts.append(_html_table(STABILITY_HEADERS, stability_table(result)))
    parts.append("<h2>Figures</h2>")
    for f in figures:
        data = base64.b64encode(f.path.read_bytes()).decode()
        parts.append(f"<figure><img alt='{esc(f.name)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{esc(f.caption)}</figcaption></figure>")
    for test in result["tests"].values():
        units = ", ".join(f"{k} {_fmt(v)}" for k, v in test["units"].items())
        parts.append(f"<h2>{esc(test['test'])} {esc(test['title'])}: {esc(test['reading'])}</h2><ul>"
                     f"<li>statistic: {esc(test['statistic'])}</li><li>null: {esc(test['null'])}</li>"
                     f"<li>rule: {esc(test['rule'])}</li><li>effect: {esc(_effect_text(test))} over "
                     f"{len(test['units'])} seed(s): {esc(units)}</li>"
                     + (f"<li>note: {esc(test['note'])}</li>" if test["note"] else "")
                     + "".join(f"<li>{esc(story)}</li>" for story in test["details"].get("shapes", []))
                     + (f"<li>values: {esc(_scalars(test))}</li>" if _scalars(test) else "") + "</ul>")
        for caption, headers, rows in _detail_tables(test):
            parts.append(f"<p>{esc(caption)}:</p>" + _html_table(headers, rows))
    style = ("body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}table{border-collapse:collapse;"
             "font-size:12px;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}"
             "img{max-width:100%}.verdict{font-size:1.4em}.channels b{color:#1a7f37}.subcircuits b{color:#8250df}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>ticket report</title><style>{style}</style>"
            f"</head><body>{''.join(parts)}</body></html>\n")


def log_summary_run(result: dict, figures: list[Figure], save_dir: Path, project: str, mode: str) -> None:
    """One W&B run (job_type=summary, group = the experiment id) with the verdict table and figures."""
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    run = wandb.init(project=project, group=result["experiment"], job_type="summary", mode=mode,
                     name=f"{result['experiment']}/summary", dir=str(save_dir),
                     config={"runs": [r["dir"] for r in result["runs"]], "rule": result["rule"]})
    try:
        payload = {"verdict/table": wandb.Table(columns=VERDICT_HEADERS, data=verdict_rows(result))}
        if result["stability"]["rows"]:
            payload["stability/table"] = wandb.Table(columns=STABILITY_HEADERS, data=stability_table(result))
        payload.update({f"figures/{f.name}": wandb.Image(str(f.path), caption=f.caption) for f in figures})
        run.log(payload)
        run.summary["verdict"] = result["verdict"]
        run.summary["score"] = result["score"]
        for name, test in result["tests"].items():
            run.summary[f"{name}/reading"] = test["reading"]
            if test["effect"] is not None:
                run.summary[f"{name}/effect"] = test["effect"]
            if test["ci"][0] is not None:
                run.summary[f"{name}/ci_low"], run.summary[f"{name}/ci_high"] = test["ci"]
    finally:
        run.finish()


def build_report(run_dirs: list[Path], out: Path | None = None, wandb_mode: str = "offline",
                 n_boot: int = 2000) -> dict:
    """Run T1..T6 on `run_dirs`, write the report into `out` (default <first run>/report), log the
    W&B summary run unless `wandb_mode` is disabled; returns the verdict dict (also verdict.json)."""
    if wandb_mode not in ("offline", "online", "disabled"):
        raise LTCError(f"wandb.mode must be offline, online or disabled, got {wandb_mode!r}")
    runs = _load([Path(d) for d in run_dirs])
    out = Path(out) if out is not None else runs[0].dir / "report"
    started = time.perf_counter()
    results = run_tests(runs, ProbeActivations.for_runs(runs), n_boot)
    result = verdict(results)
    result["experiment"] = group_id(runs[0].experiment, [experiment_id(r) for r in runs])
    result["runs"] = [{"dir": str(r.dir), "seed": r.seed, "data_order_seed": r.data_order_seed,
                       "levels": sorted(r.levels), "branches": sorted(r.branches)} for r in runs]
    rows = stability_rows(runs)
    result["stability"] = {"rows": rows, "summary": stability_summary(rows)}
    figures = all_figures(runs, results, out / "figures")
    result["figures"] = [f"figures/{f.path.name}" for f in figures]
    result["seconds"] = time.perf_counter() - started
    rundir.write_json(out / "verdict.json", result)
    rundir.write_text(out / "report.md", _markdown(result, figures))
    rundir.write_text(out / "index.html", _html(result, figures))
    if wandb_mode != "disabled":
        project = (runs[0].config.get("wandb") or {}).get("project") or "lottery-channels"
        log_summary_run(result, figures, runs[0].dir, project, wandb_mode)
    return json.loads(json.dumps(result))


def print_verdict(result: dict) -> None:
    """The verdict table on the console (rich)."""
    table = Table(title=f"Channels or subcircuits? verdict: {result['verdict']} (score {result['score']:+.2f})"
                        + (", provisional" if result["provisional"] else ""))
    for header in ("test", "title", "effect [95% CI]", "seeds", "reading"):
        table.add_column(header)
    for row in verdict_rows(result):
        reading = row[6]
        style = READING_STYLE.get(reading.split(" (")[0], "")
        table.add_row(row[0], row[1], row[3], row[4], f"[{style}]{reading}[/{style}]" if style else reading)
    console.print(table)
    console.print(f"[dim]{result['rule']}[/dim]")
    console.print(f"stability: {result['stability']['summary']}")


def main(argv: list[str]) -> int:
    cfg = parse(build_parser(), argv)
    mode = WandbConfig(mode=cfg.wandb.mode).resolved_mode()
    result = build_report([Path(d) for d in cfg.run_dir], Path(cfg.out) if cfg.out else None, mode, cfg.n_boot)
    print_verdict(result)
    out = Path(cfg.out) if cfg.out else Path(cfg.run_dir[0]) / "report"
    console.print(f"report: {out / 'index.html'}")
    return 0
