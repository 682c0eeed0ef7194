"""The report page: small HTML builders, inline CSS, one inline script, no external resources.

Everything written here is escaped unless it is wrapped in :class:`Raw` (HTML built by these
helpers). The page opens from disk: images are relative paths to PNGs beside the HTML file.

On load, the inline script records in ``<body data-images-ok="L/N">`` how many of the page's N
images loaded (``naturalWidth > 0``) and lists the ones that did not in ``data-images-failed``;
the browser test reads these.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

import numpy as np


class Raw(str):
    """Trusted HTML (made by this module's builders): inserted without escaping."""


def esc(value: object) -> str:
    if isinstance(value, Raw):
        return value
    return html.escape(str(value), quote=True)


def join(parts: Iterable[str]) -> Raw:
    return Raw("\n".join(esc(p) if not isinstance(p, Raw) else p for p in parts))


def tag(name: str, body: object = "", **attributes: object) -> Raw:
    """``<name attr="…">body</name>``; in attribute names ``_`` stands for ``-``, and a trailing
    ``_`` is dropped (``class_`` is ``class``)."""
    attrs = "".join(
        f' {key.rstrip("_").replace("_", "-")}="{esc(value)}"'
        for key, value in attributes.items()
        if value is not None and value is not False
    )
    return Raw(f"<{name}{attrs}>{esc(body)}</{name}>")


def paragraph(text: object, class_: str | None = None) -> Raw:
    return tag("p", text, class_=class_)


def skipped(reason: str) -> Raw:
    """A section that does not apply to this run, and why."""
    return Raw(f'<p class="skip"><strong>Not shown:</strong> {esc(reason)}</p>')


def note(text: object) -> Raw:
    return tag("div", text, class_="note")


def figure(src: str, alt: str, caption: object = "", max_width: int | None = None) -> Raw:
    style = f"max-width:{max_width}px" if max_width else None
    image = Raw(
        f'<img src="{esc(src)}" alt="{esc(alt)}"' + (f' style="{style}"' if style else "") + ">"
    )
    return tag("figure", join([image, tag("figcaption", caption)] if caption else [image]))


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    numeric: Sequence[int] = (),
    caption: object = None,
    class_: str | None = None,
) -> Raw:
    """A table; columns listed in ``numeric`` are right-aligned. Cells may be Raw HTML."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{esc(c)}</td>' if i in numeric else f"<td>{esc(c)}</td>"
            for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    cls = f' class="{esc(class_)}"' if class_ else ""
    return Raw(
        f"<table{cls}>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def details(summary: object, body: object, open_: bool = False) -> Raw:
    return Raw(
        f"<details{' open' if open_ else ''}><summary>{esc(summary)}</summary>{esc(body)}</details>"
    )


def section(id_: str, title: object, body: object, level: int = 3) -> Raw:
    return Raw(f'<section id="{esc(id_)}"><h{level}>{esc(title)}</h{level}>{esc(body)}</section>')


def _colour(level: float) -> tuple[str, str]:
    """Viridis background for a level in [0, 1], and a readable text colour over it."""
    from matplotlib import colormaps

    r, g, b, _ = colormaps["viridis"](float(np.clip(level, 0.0, 1.0)))
    return f"rgb({int(r * 255)},{int(g * 255)},{int(b * 255)})", "#fff" if level < 0.5 else "#000"


def heat_table(
    values: np.ndarray,
    row_labels: Sequence[str],
    titles: Sequence[Sequence[str]],
    group_ids: np.ndarray,
    vmax: float | None = None,
) -> Raw:
    """A heatmap as an HTML table: one small coloured cell per value, its text on hover
    (``title``), a thicker left border where the prompt group changes along a row."""
    values = np.asarray(values, dtype=float)
    top = vmax if vmax is not None else max(float(values.max()) if values.size else 1.0, 1e-12)
    rows = []
    for i, label in enumerate(row_labels):
        cells = [f'<th scope="row">{esc(label)}</th>']
        for j in range(values.shape[1]):
            background, _ = _colour(values[i, j] / top)
            edge = ' class="edge"' if j > 0 and group_ids[i, j] != group_ids[i, j - 1] else ""
            cells.append(
                f'<td{edge} style="background:{background}" title="{esc(titles[i][j])}"></td>'
            )
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return Raw(f'<div class="scroll"><table class="heat">{"".join(rows)}</table></div>')


CSS = """
:root { --ink:#212529; --muted:#6c757d; --line:#dee2e6; --accent:#364fc7; --bg:#f8f9fa; }
* { box-sizing: border-box; }
body { margin:0; color:var(--ink); background:#fff;
       font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; }
header { padding:1.2rem 2rem 0.6rem; border-bottom:1px solid var(--line); background:var(--bg); }
header h1 { margin:0 0 .2rem; font-size:1.5rem; }
header p { margin:.1rem 0; color:var(--muted); }
nav { position:sticky; top:0; z-index:2; background:#fff; border-bottom:1px solid var(--line);
      padding:.4rem 2rem; font-size:.9rem; }
nav a { margin-right:1rem; color:var(--accent); text-decoration:none; white-space:nowrap; }
nav a:hover { text-decoration:underline; }
main { padding:0 2rem 3rem; max-width:1280px; }
h2 { margin:2.2rem 0 .4rem; padding-top:.6rem; border-top:3px solid var(--accent);
     font-size:1.3rem; }
h3 { margin:1.6rem 0 .4rem; font-size:1.1rem; }
figure { margin:.8rem 0 1.2rem; }
figure img { max-width:100%; height:auto; border:1px solid var(--line); }
figcaption { color:var(--muted); font-size:.88rem; max-width:60rem; }
table { border-collapse:collapse; margin:.5rem 0 1rem; font-size:.88rem; }
th, td { border:1px solid var(--line); padding:.25rem .5rem; text-align:left; vertical-align:top; }
thead th { background:var(--bg); }
td.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
caption { caption-side:top; text-align:left; color:var(--muted); padding:.2rem 0; }
.skip { color:#862e9c; background:#f8f0fc; border-left:4px solid #ae3ec9; padding:.4rem .7rem; }
.note { background:#e7f5ff; border-left:4px solid #339af0; padding:.5rem .8rem; margin:.6rem 0;
        font-size:.9rem; max-width:60rem; }
.meta td:first-child { color:var(--muted); }
.grid { display:flex; flex-wrap:wrap; gap:0 1.5rem; }
.grid figure { flex:1 1 480px; max-width:620px; }
.scroll { overflow-x:auto; max-width:100%; }
table.heat { border-collapse:separate; border-spacing:0; font-size:.75rem; }
table.heat td { width:9px; height:14px; padding:0; border:0; border-top:1px solid #fff; }
table.heat td.edge { border-left:3px solid #fff; }
table.heat th { border:0; padding:0 .4rem 0 0; font-weight:normal; white-space:nowrap;
                text-align:right; }
details { margin:.5rem 0 1rem; }
summary { cursor:pointer; color:var(--accent); }
code { background:var(--bg); padding:0 .25rem; border-radius:3px; }
.good { color:#2b8a3e; } .bad { color:#c92a2a; }
"""

SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var failed = images.filter(function (img) { return !(img.complete && img.naturalWidth > 0); });
  document.body.dataset.imagesOk = (images.length - failed.length) + "/" + images.length;
  document.body.dataset.imagesFailed = failed.map(function (img) {
    return img.getAttribute("src");
  }).join(" ");
});
"""


def page(
    title: str, subtitle: Sequence[object], nav: Sequence[tuple[str, str]], body: object
) -> str:
    """The whole HTML document."""
    links = " ".join(f'<a href="#{esc(anchor)}">{esc(label)}</a>' for anchor, label in nav)
    lines = "".join(f"<p>{esc(line)}</p>" for line in subtitle)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n"
        f"<body>\n<header><h1>{esc(title)}</h1>{lines}</header>\n"
        f"<nav>{links}</nav>\n<main>\n{esc(body)}\n</main>\n"
        f"<script>{SCRIPT}</script>\n</body>\n</html>\n"
    )


__all__ = [
    "Raw",
    "details",
    "esc",
    "figure",
    "heat_table",
    "join",
    "note",
    "page",
    "paragraph",
    "section",
    "skipped",
    "table",
    "tag",
]
