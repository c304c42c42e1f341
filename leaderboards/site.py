"""The leaderboard as one web page: `<out>/site/index.html`, self-contained (inline CSS, JavaScript and SVG).

It shows every table of the compiled README with the same numbers, and lets a reader sort and filter them:
click a column header to sort by it (numbers as numbers, blanks last; again to reverse), type in a table's
filter box to keep the rows whose model, protocol variant or source match. Our rows are marked and link their
result records and model card; published rows link their source; a protocol's constants show on hover over
its name and under the table's title. Each of our rows also shows, under each number, its difference to the
comparable published row of the same model (method, architecture, epochs) in the same table, where there is
one. The plots and the studies' interval plots are inlined as SVG. Nothing is fetched from the network, so the
page works from `file://` and from any static host, and the same inputs give the same bytes.
"""

from __future__ import annotations

import html
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from hexa_zoo.catalog import METHODS, MODELS
from hexa_zoo.releases import RELEASES

from .published import source_url
from .render import (family_of, finite, format_cell, is_embedded, our_links, our_note, protocol_line,
                     scale_line, table_file_name)
from .variants import VARIANTS

if TYPE_CHECKING:
    import pandas as pd

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d1d1f;margin:0 auto;
  max-width:1500px;padding:0 1.2rem 3rem}
h1{margin:1.2rem 0 .3rem}h2{margin-top:2.2rem;border-bottom:1px solid #ddd}h3{margin:1.8rem 0 .3rem}
code{font-size:90%}a{color:#0b57d0}p.caption,p.protocols{margin:.25rem 0;color:#444;max-width:95ch}
nav>ol>li{display:inline-block;vertical-align:top;width:32%;min-width:18rem}
nav ol{font-size:14px;padding-left:1.2rem}.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:13px;margin:.5rem 0}
th,td{border-bottom:1px solid #e5e5e5;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f5f5f7;cursor:pointer;user-select:none;position:sticky;top:0}
th[data-type=num],td.num{text-align:right}td.num{white-space:nowrap;font-variant-numeric:tabular-nums}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
tr.ours{background:#fff8e1}tr.ours td.model{font-weight:600}
.tag{font-size:11px;background:#f0b400;color:#000;border-radius:3px;padding:0 .3rem;margin-left:.3rem}
.delta{display:block;font-size:11px;color:#666}.delta.up{color:#137333}.delta.down{color:#b3261e}
abbr{text-decoration:underline dotted;cursor:help}input.filter{font:inherit;padding:.2rem .4rem;width:22rem}
.count{color:#666;font-size:13px;margin-left:.6rem}figure{margin:1rem 0}figure svg{max-width:100%;height:auto}
figcaption{font-weight:600}td.note{color:#555;min-width:32ch;max-width:60ch}
td.model,td.proto,td.source{white-space:nowrap}
td.remeasure{min-width:14ch;max-width:70ch}td.remeasure code{display:block;white-space:pre-wrap;word-break:break-all}
td.remeasure ul{margin:.2rem 0;padding-left:1rem}.why{color:#666;font-size:12px}
"""

# Sorting and filtering. Sorting moves the rows within their tbody; filtering sets `hidden`.
SCRIPT = """
(function () {
  function key(td, numeric) {
    var v = td ? td.getAttribute('data-value') : null;
    if (numeric) { return v === null || v === '' ? null : parseFloat(v); }
    return td ? td.textContent.trim().toLowerCase() : '';
  }
  function sortBy(th) {
    var table = th.closest('table'), body = table.tBodies[0];
    var col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var numeric = th.getAttribute('data-type') === 'num';
    var current = th.getAttribute('aria-sort');  // first click: numbers highest first, text A to Z; then reverse
    var dir = current === 'ascending' ? -1 : current === 'descending' ? 1 : (numeric ? -1 : 1);
    table.querySelectorAll('th').forEach(function (h) { h.setAttribute('aria-sort', 'none'); });
    th.setAttribute('aria-sort', dir === 1 ? 'ascending' : 'descending');
    var rows = Array.prototype.slice.call(body.rows);
    rows.forEach(function (r, i) { r._i = i; });
    rows.sort(function (a, b) {
      var x = key(a.cells[col], numeric), y = key(b.cells[col], numeric);
      if (x === null || y === null) { return x === y ? a._i - b._i : (x === null ? 1 : -1); }  // blanks last
      if (x < y) { return -dir; }
      if (x > y) { return dir; }
      return a._i - b._i;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  function filter(input) {
    var table = document.getElementById(input.getAttribute('data-for'));
    var words = input.value.toLowerCase().split(/\\s+/).filter(Boolean), shown = 0;
    Array.prototype.forEach.call(table.tBodies[0].rows, function (r) {
      var text = r.getAttribute('data-search');
      r.hidden = !words.every(function (w) { return text.indexOf(w) >= 0; });
      if (!r.hidden) { shown += 1; }
    });
    input.closest('p').querySelector('.count').textContent = shown + ' of ' + table.tBodies[0].rows.length + ' rows';
  }
  document.querySelectorAll('table.board th').forEach(function (th) {
    th.addEventListener('click', function () { sortBy(th); });
  });
  document.querySelectorAll('input.filter').forEach(function (input) {
    input.addEventListener('input', function () { filter(input); });
  });
})();
"""


def render_site(out: Path, tables: Mapping[str, "pd.DataFrame"], metrics: Mapping[str, list[str]], skipped: list,
                sources: str, plots: Mapping) -> str:
    """The page for a leaderboard compiled into `out`: its tables and metrics (as the compiler holds them), the
    skipped files, the line naming its sources, and {title: figures.Plot} of its figures."""
    parts = [("Paper scale: ImageNet, VOC, COCO", False), ("Embedded dataset: CPU scale", True)]
    toc, body = [], []
    for part, embedded in parts:
        names = [t for t in tables if is_embedded(t) == embedded]
        if not names:
            continue
        anchor = "embedded" if embedded else "paper"
        toc.append(f'<li><a href="#{anchor}">{_e(part)}</a><ol>' + "".join(
            f'<li><a href="#t-{_id(t)}">{_e(family_of(t)[2])} — <code>{_e(t)}</code></a></li>' for t in names)
            + "</ol></li>")
        body.append(f'<h2 id="{anchor}">{_e(part)}</h2>')
        if embedded:
            body.append("<p>Measured on the embedded dataset (synthetic 64 px images, minutes on a CPU): these rank "
                        "models against each other at that scale and must never be read beside the ImageNet-scale "
                        "tables above.</p>")
        body += [_table_section(t, tables[t], metrics[t]) for t in names]
    figures = [(title, p.svg) for title, p in plots.items()]
    for svg_path in sorted((out / "studies").glob("*/differences.svg")):
        name = svg_path.parent.name
        figures.append((f"Study {name}: HEXA minus its baseline per metric, mean and 95% t-interval over seeds "
                        f"(report: studies/{name}/README.md)", svg_path.read_text(encoding="utf-8")))
    if figures:
        toc.append('<li><a href="#plots">Plots</a></li>')
        body.append('<h2 id="plots">Plots</h2>')
        for i, (title, svg) in enumerate(figures):
            body.append(f'<figure id="plot-{i}"><figcaption>{_e(title)}</figcaption>{_inline_svg(svg, i)}</figure>')
    if skipped:
        toc.append('<li><a href="#skipped">Skipped files</a></li>')
        body.append('<h2 id="skipped">Skipped files</h2><ul>' + "".join(
            f"<li><code>{_e(s.path.name)}</code>: {_e(s.reason)}</li>" for s in skipped) + "</ul>")
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>hexa-zoo leaderboard</title>", f"<style>{CSS}</style>", "</head>", "<body>",
        "<header><h1>hexa-zoo leaderboard</h1>",
        "<p>Transfer results of self-supervised ResNets beside the published numbers of the field, one table per "
        "benchmark; only rows of comparable protocol variants share a table. Click a column header to sort, type in "
        "a filter box to narrow a table. <span class=\"tag\">ours</span> marks rows measured here (mean ± spread, "
        "with what the spread is over); a published number is shown as its source prints it.</p>",
        f"<p>{_markdown_inline(sources)} Compiled by <code>hexa leaderboard</code>; the Markdown version is "
        '<a href="../README.md">README.md</a>.</p></header>',
        '<nav id="toc"><h2>Contents</h2><ol>' + "".join(toc) + "</ol></nav>", "<main>", *body, "</main>",
        f"<script>{SCRIPT}</script>", "</body>", "</html>", ""])


def _table_section(table: str, frame: "pd.DataFrame", metrics: list[str]) -> str:
    tid = f"tbl-{_id(table)}"
    head = ['<th data-type="text">Model</th>', '<th data-type="text">Arch</th>', '<th data-type="num">Epochs</th>',
            '<th data-type="text">Protocol</th>',
            *(f'<th data-type="num">{_e(m)}</th>' for m in metrics),
            '<th data-type="text">Source</th>', '<th data-type="text">Note</th>',
            '<th data-type="text">Re-measure</th>']
    compared = comparable_rows(frame)
    rows = []
    for i, (_, row) in enumerate(frame.iterrows()):
        ours = row["kind"] == "ours"
        base = compared.get(i)
        cells = [f'<td class="model">{_e(row["model"])}{" †" if row["verified"] == "no" else ""}'
                 f'{"<span class=tag>ours</span>" if ours else ""}</td>',
                 f"<td>{_e(row['arch'])}</td>",
                 f'<td class="num" data-value="{_e(row["epochs"])}">{_e(row["epochs"])}</td>',
                 f'<td class="proto">{_protocol_cell(row["protocol"])}</td>']
        for m in metrics:
            text = format_cell(row, m)
            value = f"{float(row[m]):.6g}" if finite(row[m]) else ""
            delta = ""
            if base is not None and finite(row[m]) and finite(base[m]):
                d = float(row[m]) - float(base[m])
                delta = (f'<span class="delta {"up" if d > 0 else "down" if d < 0 else ""}" title="minus '
                         f'{_e(base["model"])} {_e(base["epochs"])} ep as {_e(base["source"])} reports it">'
                         f'{d:+.2f} vs published</span>')
            cells.append(f'<td class="num" data-value="{value}"><span class="v">{_e(text)}</span>{delta}</td>')
        cells += [f'<td class="source">{_source_cell(row)}</td>', f'<td class="note">{_e(_note(row, base))}</td>',
                  f'<td class="remeasure">{_remeasure_cell(row)}</td>']
        search = " ".join(str(row[c]) for c in ("model", "arch", "epochs", "protocol", "source", "kind")).lower()
        rows.append(f'<tr class="{"ours" if ours else "published"}" data-search="{_e(search)}">{"".join(cells)}</tr>')
    return "\n".join([
        f'<section id="t-{_id(table)}" class="board">',
        f"<h3>{_e(family_of(table)[2])} — <code>{_e(table)}</code></h3>",
        f'<p class="caption">{_markdown_inline(scale_line(table, frame))}</p>',
        f'<p class="protocols">{_markdown_inline(protocol_line(frame))}</p>',
        f'<p><label>Filter <input type="search" class="filter" data-for="{tid}" '
        f'placeholder="model, method or protocol variant"></label><span class="count">{len(frame)} of {len(frame)} '
        f'rows</span> · <a href="../tables/{table_file_name(table)}.csv">CSV</a></p>',
        f'<div class="scroll"><table class="board" id="{tid}" data-table="{_e(table)}">',
        f"<thead><tr>{''.join(head)}</tr></thead>", "<tbody>", *rows, "</tbody></table></div>", "</section>"])


def comparable_rows(frame: "pd.DataFrame") -> dict[int, "pd.Series"]:
    """{position of one of our rows: the published row of the same model in this table}: same method (as the
    catalog titles it, or a release names it; spelling aside), architecture and, where the source gives them,
    epochs. Two candidates (DeepCluster-v2 400 ep with 2x160 or 2x224 crops) are not told apart by guessing: no
    comparison then."""
    published = [(i, r) for i, (_, r) in enumerate(frame.iterrows()) if r["kind"] == "published"]
    found = {}
    for i, (_, row) in enumerate(frame.iterrows()):
        if row["kind"] != "ours":
            continue
        name, _, tag = str(row["model"]).partition(".")
        release = RELEASES.get(str(row["model"])) or next((r for r in RELEASES.values() if r.model == name), None)
        if name in MODELS:
            method, arch = MODELS[name]
            title = METHODS[method].title
            named = lambda written, title=title: _plain(written) == _plain(title)  # noqa: E731
            epochs = m[1] if (m := re.search(r"_ep(\d+)", tag)) else str(row["epochs"] or "")
        elif release is not None:  # a release only (BYOL, InsDis, ...): its method as the published rows write it
            named, arch, epochs = release.is_method, release.arch, str(release.epochs)
        else:
            continue
        same = [pub for _, pub in published if named(str(pub["model"]))
                and pub["arch"] == arch and str(pub["epochs"]) in ("", epochs)]
        if len(same) == 1:
            found[i] = same[0]
    return found


def _plain(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _note(row, base) -> str:
    if row["kind"] == "published":
        return row["note"]
    text = our_note(row)
    if base is not None:
        text += f"; compared with {base['model']} ({base['epochs'] or '?'} ep, {base['source']})"
    return text


def _remeasure_cell(row) -> str:
    """A published row's command to re-measure it here (and one per dataset of a folded row), or why none."""
    if row["kind"] != "published":
        return ""
    each = [c for c in row["remeasure_each"].split("\n") if c]
    if not each:
        return f'<span class="why">{_e(row["remeasure_why"])}</span>'
    main = row["remeasure"] or each[0]
    per = "".join(f"<li><code>{_e(c)}</code></li>" for c in each) if len(each) > 1 else ""
    return (f'<details><summary>command</summary><code class="cmd">{_e(main)}</code>'
            + (f"<p>or one dataset at a time:</p><ul>{per}</ul>" if per else "") + "</details>")


def _protocol_cell(name: str) -> str:
    if name in VARIANTS:
        v = VARIANTS[name]
        return f'<abbr title="{_e(v.code)}: {_e(v.what)}">{_e(name)}</abbr>'
    return f'<abbr title="a preset of ours that no published protocol runs">{_e(name)}</abbr>'


def _source_cell(row) -> str:
    if row["kind"] == "published":
        url = source_url(str(row["source"]))
        return f'<a href="{_e(url)}">{_e(row["source"])}</a>' if url else _e(row["source"])
    links = [f'<a href="../{_e(target)}">{"model card" if label == "card" else label}</a>' if target else _e(label)
             for label, target in our_links(row)]
    return "ours: " + " · ".join(links)


def _inline_svg(svg: str, n: int) -> str:
    """A matplotlib SVG for inlining: without its XML prologue and RDF metadata, its ids prefixed so figures
    do not clash."""
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg[svg.index("<svg"):], flags=re.S)
    svg = re.sub(r'\bid="', f'id="f{n}-', svg)
    return re.sub(r'(url\(#|href="#)', rf"\g<1>f{n}-", svg)


def _markdown_inline(text: str) -> str:
    """The captions are written for Markdown: `code` and **bold** as HTML, the rest escaped."""
    text = _e(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


def _id(table: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", table)


def _e(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return html.escape(str(value), quote=True)

