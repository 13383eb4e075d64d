"""One model of a report (`Document`: a headline `Card`, then `Section`s of text, tables and
figures), rendered to the console, to Markdown and to self-contained HTML, so the three always say
the same thing. The HTML reads like a paper's figure page: the card first, figures at full width
with numbered captions, detail folded under its title."""
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
    `render_console` (the rest goes to the files only); `folded` = collapsed under its title in
    HTML (detail a reader opens when they want it)."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    bullets: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    console: bool = False
    folded: bool = False


@dataclass
class Card:
    """What a report concludes, shown before anything else: a `label` (`Verdict`), the `headline`
    (styled by `css_class`), the sentence saying why, and labelled facts (readings per site, the
    calibration's error rate...)."""

    label: str
    headline: str
    why: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    css_class: str = ""


@dataclass
class Document:
    title: str
    sections: list[Section]
    css_class: dict[str, str] = field(default_factory=dict)  # paragraph text -> HTML class (the verdict line)
    card: Card | None = None


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _card_markdown(card: Card) -> list[str]:
    lines = [f"> **{card.label}: {card.headline}**", ">", f"> {card.why}", ">"]
    return lines + [f"> - {label}: {value}" for label, value in card.facts] + [""]


def render_markdown(doc: Document) -> str:
    lines = [f"# {doc.title}", ""] + (_card_markdown(doc.card) if doc.card else [])
    number = 0
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
            number += 1
            lines += [f"![{figure.caption}]({FIGURES}/{figure.path.name})", "", f"**Figure {number}.** {figure.caption}",
                      ""]
    return "\n".join(lines).rstrip() + "\n"


def _css_class(text: str) -> str:
    """A reading's CSS class: its words before any ' (...)', joined by '_' (`no ticket` -> `no_ticket`)."""
    return text.split(" (")[0].strip().replace(" ", "_")


def _html_table(table: Table) -> str:
    esc = html.escape

    def cell(text: str) -> str:
        styled = text.split(" (")[0] in table.styles
        return f"<td class='{esc(_css_class(text))}'>{esc(text)}</td>" if styled else f"<td>{esc(text)}</td>"

    head = "".join(f"<th>{esc(h)}</th>" for h in table.headers)
    body = "".join("<tr>" + "".join(cell(c) for c in row) + "</tr>" for row in table.rows)
    caption = f"<caption>{esc(table.caption)}</caption>" if table.caption else ""
    return f"<div class='table'><table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


STYLE = """
body{font:15px/1.5 -apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#1f2328;max-width:1100px;margin:auto;
  padding:1.5em 2em 4em}
h1{font-size:1.5em;font-weight:600;margin:0.2em 0 0.8em}h2{font-size:1.2em;margin:1.8em 0 0.5em;
  border-bottom:1px solid #d1d9e0;padding-bottom:0.2em}
.card{border:1px solid #d1d9e0;border-left:8px solid #6e7781;border-radius:6px;padding:1em 1.4em;margin:0 0 1.5em;
  background:#f6f8fa}
.card .label{text-transform:uppercase;letter-spacing:0.08em;font-size:0.75em;color:#59636e}
.card .headline{font-size:2.1em;font-weight:700;line-height:1.2;margin:0.1em 0 0.3em}
.card .why{font-size:1.05em;margin:0 0 0.6em}
.card dl{display:grid;grid-template-columns:max-content 1fr;gap:0.2em 1.2em;margin:0}
.card dt{color:#59636e}.card dd{margin:0;font-weight:500}
.card.channels{border-left-color:#1a7f37}.card.subcircuits{border-left-color:#8250df}
.card.no_ticket{border-left-color:#9a6700}.card.inconclusive,.card.mixed{border-left-color:#bc4c00}
.channels:is(.headline,td,dd){color:#1a7f37}.subcircuits:is(.headline,td,dd){color:#8250df}
.no_ticket:is(.headline,td,dd){color:#9a6700}:is(.inconclusive,.mixed):is(.headline,td,dd){color:#bc4c00}
td.ticket{color:#1a7f37}td.conflict{color:#cf222e}td.not_run{color:#8c959f}
figure{margin:1.2em 0 2em}figure img{display:block;max-width:100%;height:auto;margin:0 auto}
figcaption{font-size:0.92em;color:#31373d;margin-top:0.4em}
.table{overflow-x:auto}table{border-collapse:collapse;font-size:13px;margin:0.6em 0}
caption{text-align:left;font-weight:600;padding:0.2em 0}
td,th{border:1px solid #d1d9e0;padding:3px 8px;text-align:left;vertical-align:top}th{background:#f6f8fa}
details{border:1px solid #d1d9e0;border-radius:6px;padding:0.3em 1em;margin:0.5em 0}
details>summary{cursor:pointer;font-weight:600;padding:0.3em 0}details[open]>summary{margin-bottom:0.4em}
.verdict{font-weight:600}
"""


def _card_html(card: Card) -> str:
    esc = html.escape
    facts = "".join(f"<dt>{esc(label)}</dt><dd class='{esc(_css_class(value))}'>{esc(value)}</dd>"
                    for label, value in card.facts)
    return (f"<section class='card {esc(card.css_class)}'><div class='label'>{esc(card.label)}</div>"
            f"<div class='headline {esc(card.css_class)}'>{esc(card.headline)}</div><p class='why'>{esc(card.why)}</p>"
            + (f"<dl>{facts}</dl>" if facts else "") + "</section>")


def render_html(doc: Document) -> str:
    """One HTML file with the figures inlined (it can be mailed or attached as it is): the card,
    then each section (folded ones under a <details>), figures numbered at full width."""
    esc = html.escape
    parts = [f"<h1>{esc(doc.title)}</h1>"] + ([_card_html(doc.card)] if doc.card else [])
    number = 0
    for section in doc.sections:
        body = []
        for paragraph in section.paragraphs:
            cls = doc.css_class.get(paragraph)
            body.append(f"<p class='{esc(cls)}'>{esc(paragraph)}</p>" if cls else f"<p>{esc(paragraph)}</p>")
        if section.bullets:
            body.append("<ul>" + "".join(f"<li>{esc(b)}</li>" for b in section.bullets) + "</ul>")
        body += [_html_table(t) for t in section.tables]
        for f in section.figures:
            number += 1
            data = base64.b64encode(f.path.read_bytes()).decode()
            body.append(f"<figure><img alt='{esc(f.name)}' src='data:image/png;base64,{data}'>"
                        f"<figcaption><b>Figure {number}.</b> {esc(f.caption)}</figcaption></figure>")
        if section.folded:
            parts.append(f"<details><summary>{esc(section.title)}</summary>{''.join(body)}</details>")
        else:
            parts.append(f"<section><h2>{esc(section.title)}</h2>{''.join(body)}</section>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><meta name='viewport' "
            f"content='width=device-width, initial-scale=1'><title>{esc(doc.title)}</title>"
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
