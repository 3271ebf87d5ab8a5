"""An HTML page over the figures of a list: one row per figure, a thumbnail linking to the full picture.

Every text that comes from data (paths, captions, error messages) is HTML-escaped and every
link is percent-encoded, so a caption with ``<b>`` or a file name with ``&`` or ``#``
neither breaks the page nor injects markup.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from utils.atomic import atomic_write_text

__all__ = ["IndexRow", "write_index"]


@dataclass
class IndexRow:
    """One figure of the page. Paths are relative to the page's folder; ``error`` marks a skipped record."""

    index: int
    image: str
    caption: str
    figure: str = ""
    thumbnail: str = ""
    maps: str = ""
    itm_probability: float | None = None
    top_words: list[str] = field(default_factory=list)
    error: str = ""


_STYLE = """
body { font-family: sans-serif; margin: 1.5em; }
table { border-collapse: collapse; }
td, th { border-bottom: 1px solid #ccc; padding: 6px 10px; vertical-align: top; text-align: left; }
td.caption { max-width: 46em; }
td.error { color: #a00; }
img { display: block; }
"""


def _link(path: str) -> str:
    return html.escape(quote(path), quote=True)


def write_index(path: str | Path, rows: list[IndexRow], *, title: str, details: list[str] | None = None) -> None:
    """Write the page atomically; ``details`` are extra lines shown under the title (escaped)."""
    esc = html.escape
    lines = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{esc(title)}</title>", f"<style>{_STYLE}</style>", "</head>", "<body>",
             f"<h1>{esc(title)}</h1>"]
    lines += [f"<p>{esc(line)}</p>" for line in details or []]
    lines += ["<table>", "<tr><th>#</th><th>Grad-CAM (whole caption)</th><th>caption</th>"
              "<th>ITM P(match)</th><th>strongest words</th><th>files</th></tr>"]
    for row in rows:
        image = f'<a href="{_link(row.image)}">{esc(Path(row.image).name)}</a>' if row.image else ""
        if row.error:
            lines.append(f"<tr><td>{row.index}</td><td>{image}</td><td class=\"caption\">{esc(row.caption)}</td>"
                         f"<td class=\"error\" colspan=\"3\">skipped: {esc(row.error)}</td></tr>")
            continue
        thumb = (f'<a href="{_link(row.figure)}"><img src="{_link(row.thumbnail)}" alt="Grad-CAM of record '
                 f'{row.index}" loading="lazy"></a>')
        probability = "" if row.itm_probability is None else f"{row.itm_probability:.3f}"
        files = [f'<a href="{_link(row.figure)}">figure</a>']
        if row.maps:
            files.append(f'<a href="{_link(row.maps)}">maps (.npy)</a>')
        files.append(image)
        lines.append(f"<tr><td>{row.index}</td><td>{thumb}</td><td class=\"caption\">{esc(row.caption)}</td>"
                     f"<td>{probability}</td><td>{esc(', '.join(row.top_words))}</td>"
                     f"<td>{'<br>'.join(files)}</td></tr>")
    lines += ["</table>", "</body>", "</html>", ""]
    atomic_write_text(path, "\n".join(lines))
