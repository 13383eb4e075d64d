"""The suite's result as a table: rich on the console, Markdown for the README and docs/benchmarks/."""
from __future__ import annotations


def _seconds(value: float) -> str:
    """A duration at a readable scale: ms, s, min or h."""
    if value >= 7200:
        return f"{value / 3600:.1f} h"
    if value >= 120:
        return f"{value / 60:.1f} min"
    return f"{value:.3g} s" if value >= 0.01 else f"{value * 1e3:.3g} ms"


COLUMNS = ("case", "measured", "ours", "baseline", "ratio", "ratio is", "peak mem", "note")
NUMERIC = ("ours", "baseline", "ratio", "peak mem")  # right-aligned


def _title(result: dict) -> str:
    """The size, the machine and its load: what the ratios were measured on."""
    m = result["machine"]
    where = m.get("gpu") if result["settings"]["device"].startswith("cuda") else f"{m['cpu']}, {m['cpu_count']} cores"
    return (f"ltc bench ({result['settings']['size']}) on {where}, {m['threads']} torch threads, "
            f"load average {m['load_average'][0]:.1f} -> {m['load_average_end'][0]:.1f}")


def _cells(r: dict) -> list[str]:
    """One row of `run_suite`'s result as the table's cells (COLUMNS)."""
    return [r["case"], r["what"], _seconds(r["ours_s"]), _seconds(r["baseline_s"]), f"{r['ratio']:.3g}",
            r["ratio_means"], f"{r['peak_bytes'] / 2**20:.0f} MiB", r["note"]]


def _memory_methods(result: dict) -> str:
    """How the peaks were measured (the methods of all rows)."""
    return "peak memory: " + "; ".join(sorted({r["memory_method"] for r in result["rows"]}))


def print_table(result: dict) -> None:
    """The suite's rows as one rich table, with the machine it ran on."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=_title(result))
    for name in COLUMNS:
        table.add_column(name, justify="right" if name in NUMERIC else "left")
    for r in result["rows"]:
        table.add_row(*_cells(r))
    console = Console(highlight=False, width=max(160, Console().width))
    console.print(table)
    console.print(_memory_methods(result))


def markdown_table(result: dict) -> str:
    """The same table as Markdown (for the README's Performance section)."""
    lines = [f"**{_title(result)}**", "", "| " + " | ".join(COLUMNS) + " |",
             "|" + "|".join("---:" if c in NUMERIC else "---" for c in COLUMNS) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in _cells(r)) + " |" for r in result["rows"]]
    return "\n".join([*lines, "", _memory_methods(result)]) + "\n"
