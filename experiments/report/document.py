"""One model of a report (`Document` of `Section`s of text, tables and figures), rendered to the
console, to Markdown and to self-contained HTML, so the three always say the same thing."""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table as RichTable

from lth import rundir
from lth.layout import FIGURES, ReportFiles


@dataclass
class Figure:
    """A written PNG and its caption."""

    name: str
    path: Path
    caption: str


@dataclass
class Table:
    """A table of text cells. On the console (when its section is printed): `console_columns`
    picks the columns (None: all, [] : the table is left out), `styles` maps a cell's text to a
    rich style."""

    caption: str
    headers: list[str]
    rows: list[list[str]]
    console_columns: list[str] | None = None
    styles: dict[str, str] = field(default_factory=dict)


@dataclass
class Section:
    """A titled part: paragraphs, then bullets, tables and figures. `console` = printed by
    `render_console` (the rest goes to the files only)."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    bullets: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    console: bool = False


@dataclass
class Document:
    title: str
    sections: list[Section]
    css_class: dict[str, str] = field(default_factory=dict)  # paragraph text -> HTML class (the verdict line)


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def render_markdown(doc: Document) -> str:
    lines = [f"# {doc.title}", ""]
    for section in doc.sections:
        lines += [f"## {section.title}", ""]
        for paragraph in section.paragraphs:
            lines += [paragraph, ""]
        if section.bullets:
            lines += [f"- {b}" for b in section.bullets] + [""]
        for table in section.tables:
            if table.caption:
                lines += [f"{table.caption}:", ""]
            lines += [_md_row(table.headers), "|" + "---|" * len(table.headers)]
            lines += [_md_row(row) for row in table.rows] + [""]
        for figure in section.figures:
            lines += [f"![{figure.caption}]({FIGURES}/{figure.path.name})", "", figure.caption, ""]
    return "\n".join(lines).rstrip() + "\n"


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table.rows)
    caption = f"<p>{html.escape(table.caption)}:</p>" if table.caption else ""
    return f"{caption}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}table{border-collapse:collapse;"
         "font-size:12px;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}"
         "img{max-width:100%}.verdict{font-size:1.4em}.channels{color:#1a7f37}.subcircuits{color:#8250df}"
         ".no_ticket{color:#9a6700}")


def render_html(doc: Document) -> str:
    """One HTML file with the figures inlined (it can be mailed or attached as it is)."""
    esc = html.escape
    parts = [f"<h1>{esc(doc.title)}</h1>"]
    for section in doc.sections:
        parts.append(f"<h2>{esc(section.title)}</h2>")
        for paragraph in section.paragraphs:
            cls = doc.css_class.get(paragraph)
            parts.append(f"<p class='{esc(cls)}'>{esc(paragraph)}</p>" if cls else f"<p>{esc(paragraph)}</p>")
        if section.bullets:
            parts.append("<ul>" + "".join(f"<li>{esc(b)}</li>" for b in section.bullets) + "</ul>")
        parts += [_html_table(t) for t in section.tables]
        for f in section.figures:
            data = base64.b64encode(f.path.read_bytes()).decode()
            parts.append(f"<figure><img alt='{esc(f.name)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{esc(f.caption)}</figcaption></figure>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(doc.title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n")


def render_console(doc: Document, console: Console) -> None:
    """The sections marked `console`: tables as rich tables (their console columns), text as lines."""
    for section in doc.sections:
        if not section.console:
            continue
        for table in section.tables:
            if table.console_columns == []:
                continue
            columns = table.console_columns or table.headers
            picked = [table.headers.index(c) for c in columns]
            rich = RichTable(title=table.caption or section.title)
            for name in columns:
                rich.add_column(name)
            for row in table.rows:
                cells = [row[i] for i in picked]
                rich.add_row(*[_styled(c, table.styles) for c in cells])
            console.print(rich)
        for paragraph in section.paragraphs:
            console.print(paragraph)
        for bullet in section.bullets:
            console.print(f"  {bullet}")


def _styled(cell: str, styles: dict[str, str]) -> str:
    style = styles.get(cell.split(" (")[0])
    return f"[{style}]{cell}[/{style}]" if style else cell


def write_document(doc: Document, files: ReportFiles) -> None:
    """The Markdown and HTML renderings into a report directory (atomic writes)."""
    rundir.write_text(files.markdown, render_markdown(doc))
    rundir.write_text(files.html, render_html(doc))
