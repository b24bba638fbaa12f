"""The report's HTML pieces: its style sheet, escaped cells, tables from DataFrames or rows, PNGs
embedded as data URIs, and the small Markdown subset that summary.md uses. Nothing here fetches
anything: the report must open offline, from a copied folder."""
from __future__ import annotations

import base64
import html
import math
import re
from pathlib import Path

import numpy as np

from dnn_search.results.report_data import FIGURE_DIR

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0 auto;max-width:1200px;
padding:1.5em;color:#222;background:#fff;line-height:1.45}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
.meta{color:#555}.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5em .8em}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}th{background:#f3f3f3}
td.l,th.l{text-align:left}.counts span{display:inline-block;margin-right:1em;font-weight:600}
code{background:#f3f3f3;padding:0 .2em}
"""


def esc(x) -> str:
    return html.escape(str(x), quote=True)


def fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(v):
            return ""
        return f"{v:.4g}"
    return str(v)


def table(frame, left=()) -> str:
    head = "".join(f'<th class="{"l" if c in left else ""}">{esc(c)}</th>' for c in frame.columns)
    body = []
    for _, row in frame.iterrows():
        body.append("<tr>" + "".join(f'<td class="{"l" if c in left else ""}">{esc(fmt(row[c]))}</td>'
                                     for c in frame.columns) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def figure(path: Path, caption: str, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{esc(caption)} <code>{esc(FIGURE_DIR + '/' + path.name)}</code></figcaption></figure>")


def markdown_to_html(text: str) -> str:
    """The small Markdown subset summary.md uses: headings, pipe tables, lists, paragraphs, `code`."""
    def inline(s: str) -> str:
        s = esc(s)
        s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
        s = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", s)
        return re.sub(r"\b(?:https?|ftp)://\S+", "[link removed]", s)  # the report fetches nothing

    out: list[str] = []
    para: list[str] = []
    lines, i = text.splitlines(), 0

    def flush():
        if para:
            out.append(f"<p>{inline(' '.join(para))}</p>")
            para.clear()
    while i < len(lines):
        line = lines[i].rstrip()
        if line.lstrip().startswith("|"):
            flush()
            rows = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(re.fullmatch(r":?-{2,}:?", c) for c in cells if c):
                    rows.append(cells)
                i += 1
            if rows:
                head = "".join(f"<th>{inline(c)}</th>" for c in rows[0])
                body = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            continue
        m = re.match(r"(#{1,6})\s+(.*)", line)
        if m:
            flush()
            level = min(6, len(m.group(1)) + 2)  # nested below the report's own h2
            out.append(f"<h{level}>{inline(m.group(2))}</h{level}>")
        elif re.match(r"\s*[-*]\s+", line):
            flush()
            items = []
            while i < len(lines) and re.match(r"\s*[-*]\s+", lines[i]):
                item = re.sub(r"^\s*[-*]\s+", "", lines[i])
                items.append(f"<li>{inline(item)}</li>")
                i += 1
            out.append(f"<ul>{''.join(items)}</ul>")
            continue
        elif not line.strip():
            flush()
        else:
            para.append(line.strip())
        i += 1
    flush()
    return "\n".join(out)


def rows_table(header, rows, left=()) -> str:
    import pandas as pd
    return table(pd.DataFrame(rows, columns=header), left=left)
