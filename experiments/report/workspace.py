"""A saved W&B workspace for one experiment (`ltc workspace`), built with `wandb-workspaces`.

The runset is the experiment's groups (each run's experiment id, and the report's group for
several seeds), grouped by branch. Sections:
- across levels: test accuracy and each spectrum's final effective rank against the weights
  remaining (run summaries), the same against `sparsity/remaining` as defined in each run, the
  spectra-by-level custom chart over the summary run's long table, and parallel coordinates
  (level, density, accuracy, effective ranks);
- during training: each spectrum's effective rank and the validation accuracy against the step.
"""
from __future__ import annotations

from channels.keys import SpectrumKey
from experiments.report.spectra_table import CHART_FIELDS
from experiments.report.wandb_summary import CHART_KEY, chart_id
from experiments.environment.wandb_jobs import REMAINING

RANK = "effective_rank"


def build_workspace(entity: str, project: str, groups: list[str], keys: list[SpectrumKey], name: str):
    """The workspace (not saved): its runs are those of `groups`, its panels those above."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces import expr

    ranks = [key.wandb(RANK) for key in keys]
    against_sparsity = [
        wr.ScatterPlot(title=f"{metric} against weights remaining", x=wr.SummaryMetric("density"),
                       y=wr.SummaryMetric(metric), log_x=True)
        for metric in ["test/acc", *ranks]]
    defined = wr.LinePlot(title="final metrics against sparsity/remaining", x=REMAINING,
                          y=["final/test/acc", *[f"final/{m}" for m in ranks]], log_x=True)
    chart = wr.CustomChart.from_table(f"{CHART_KEY}_table", chart_fields=dict(CHART_FIELDS),
                                      chart_strings={"title": "final spectra by level"})
    chart.chart_name = chart_id(entity)
    columns = [wr.ParallelCoordinatesPlotColumn(metric=wr.Config(c)) for c in ("level", "density")]
    columns += [wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(m)) for m in ["test/acc", *ranks]]
    across = ws.Section(name="Across levels, branches and seeds", is_open=True,
                        panels=[*against_sparsity, defined, chart, wr.ParallelCoordinatesPlot(columns=columns)])
    during = ws.Section(name="During training", is_open=True, panels=[
        wr.LinePlot(title=metric, x="trainer/global_step", y=[metric]) for metric in ["val/acc", *ranks]])
    return ws.Workspace(entity=entity, project=project, name=name, sections=[across, during],
                        runset_settings=ws.RunsetSettings(filters=[expr.Metric("Group").isin(groups)],
                                                          groupby=[expr.Config("branch")]))
