"""summary.md as a standalone HTML page, for `snakemake --report`.

The report shows images and HTML inline but offers a Markdown or CSV file only as a
download, so the Table-1 summary and the diagnostics would not be visible there. This
converts the small Markdown subset the summary is written in (``#`` headings, pipe
tables, paragraphs) with no extra dependency; anything else is kept as escaped text.
"""
from __future__ import annotations

import html

_STYLE = ("body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin:0.5em 0 1.5em}"
          "th,td{border:1px solid #bbb;padding:3px 8px}td.num,th.num{text-align:right}"
          "tr:nth-child(even){background:#f4f4f4}")


NUM = ' class="num"'


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _is_rule(line: str) -> bool:
    return set(line.replace("|", "").replace(":", "").replace("-", "").strip()) == set()


def _table(lines: list[str]) -> str:
    head = _cells(lines[0])
    rules = _cells(lines[1]) if len(lines) > 1 and _is_rule(lines[1]) else []
    right = [r.endswith(":") for r in rules] + [False] * len(head)
    body = lines[2:] if rules else lines[1:]

    def row(cells: list[str], tag: str) -> str:
        return "<tr>" + "".join(
            f"<{tag}{NUM if right[i] else ''}>{html.escape(c)}</{tag}>" for i, c in enumerate(cells)) + "</tr>"

    return "<table>" + row(head, "th") + "".join(row(_cells(b), "td") for b in body) + "</table>"


def markdown_to_html(text: str, title: str) -> str:
    blocks: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.lstrip().startswith("|"):
            j = i
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                j += 1
            blocks.append(_table(lines[i:j]))
            i = j
        elif line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")), 6)
            blocks.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
            i += 1
        else:
            j = i
            while j < len(lines) and lines[j].strip() and not lines[j].lstrip().startswith(("|", "#")):
                j += 1
            blocks.append("<p>" + html.escape(" ".join(l.strip() for l in lines[i:j])) + "</p>")
            i = j
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>\n" + "\n".join(blocks) + "\n</body></html>\n")
