"""The self-contained HTML report: tables, plots and, per configuration, a gallery of benign and
adversarial images with their maps. Every image is an inline data URI and a Content-Security-Policy
forbids any network access, so the file opens from disk anywhere."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import tables
from .meta import class_names, header_lines

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem auto;max-width:1200px;
color:#222;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0 1rem}
th,td{border:1px solid #ccc;padding:.2rem .45rem;text-align:right}
th{background:#f3f3f3}td.t,th.t{text-align:left}
.plots img{max-width:100%;border:1px solid #eee;margin:.3rem 0}
.gallery{display:flex;flex-wrap:wrap;gap:.6rem}
figure.sample{margin:0;border:1px solid #ddd;padding:.3rem;background:#fafafa}
figure.sample img{width:80px;height:80px;image-rendering:pixelated;margin:1px}
figcaption{font-size:.7rem;max-width:336px}
.ok{color:#070}.fail{color:#b00}.legend,.meta{font-size:.8rem;color:#555}
details{margin:.6rem 0}summary{cursor:pointer;font-weight:600}
"""

# records the counts the browser actually rendered (the tests read them from the DOM)
SCRIPT = """
window.addEventListener('load', function () {
  var imgs = document.querySelectorAll('img.tile'), ok = 0;
  imgs.forEach(function (i) { if (i.complete && i.naturalWidth > 0) ok++; });
  document.body.setAttribute('data-tiles-loaded', String(ok));
  document.body.setAttribute('data-tables', String(document.querySelectorAll('table').length));
});
"""

CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'")


def _png(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _image(t: torch.Tensor) -> np.ndarray:
    a = (t.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    return a[0].numpy() if a.shape[0] == 1 else a.permute(1, 2, 0).numpy()


_JET = None


def _overlay(img: torch.Tensor, m: torch.Tensor) -> np.ndarray:
    """The map (bilinear to the image size, jet colours) blended half-and-half over the image."""
    global _JET
    if _JET is None:
        from matplotlib import colormaps

        _JET = torch.from_numpy(colormaps["jet"](np.linspace(0, 1, 256))[:, :3]).float()
    size = img.shape[-2:]
    m = F.interpolate(m.detach().float().cpu()[None], size=size, mode="bilinear", align_corners=False)[0, 0]
    heat = _JET[(m.clamp(0, 1) * 255).round().long()]                       # (H, W, 3)
    base = img.detach().float().cpu().clamp(0, 1)
    base = base.expand(3, -1, -1) if base.shape[0] == 1 else base
    out = 0.5 * base.permute(1, 2, 0) + 0.5 * heat
    return (out * 255).round().clamp(0, 255).to(torch.uint8).numpy()


def _table_html(head, rows, n_ident: int) -> str:
    th = "".join(f'<th class="{"t" if i < n_ident else ""}">{html.escape(str(h))}</th>' for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f'<td class="{"t" if i < n_ident else ""}">{html.escape(str(c))}</td>'
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _name(names, c):
    if c is None:
        return "?"
    return names[c] if names and 0 <= int(c) < len(names) else str(c)


def gallery_html(group, names, limit: int | None) -> tuple[str, int]:
    """Figures of the group's gallery images; returns (html, number of tiles)."""
    g = group.gallery
    if not g or "images" not in g:
        return '<p class="meta">no stored images for this configuration</p>', 0
    by_pos = {r.get("pos"): r for r in group.records}
    count = g["images"].shape[0] if limit is None else min(limit, g["images"].shape[0])
    has_maps = "benign_maps" in g and "adversarial_maps" in g
    figs, tiles = [], 0
    for i in range(count):
        pos = int(g["pos"][i]) if "pos" in g else i
        rec = by_pos.get(pos, {})
        x, xa = g["images"][i], g["adversarial"][i]
        parts = [("benign", _image(x))]
        if has_maps:
            parts.append(("benign map", _overlay(x, g["benign_maps"][i])))
        parts.append(("adversarial", _image(xa)))
        if has_maps:
            parts.append(("adversarial map", _overlay(xa, g["adversarial_maps"][i])))
        imgs = "".join(f'<img class="tile" alt="{a}" title="{a}" src="{_png(arr)}">' for a, arr in parts)
        tiles += len(parts)
        ok = rec.get("success")
        target = rec.get("target", rec.get("label_attacked"))
        cap = (f"#{pos} (image {rec.get('index', '?')}): {html.escape(_name(names, rec.get('label')))}"
               + (f" → target {html.escape(_name(names, target))}" if "target" in rec else "")
               + f"; predicted {html.escape(_name(names, rec.get('pred')))}"
               + (f" ({rec['confidence']:.2f})" if isinstance(rec.get("confidence"), float) else "")
               + (f'; <span class="{"ok" if ok else "fail"}">{"success" if ok else "failed"}</span>'
                  if ok is not None else "")
               + (f"; IoU {rec['iou_topk_mean']:.2f}" if isinstance(rec.get("iou_topk_mean"), float) else ""))
        figs.append(f'<figure class="sample">{imgs}<figcaption>{cap}</figcaption></figure>')
    legend = "benign · benign map · adversarial · adversarial map" if has_maps else "benign · adversarial"
    return f'<p class="meta">tiles: {legend}</p><div class="gallery">{"".join(figs)}</div>', tiles


def render_report(run, plot_paths, *, gallery: int | None = None, pooled=None) -> str:
    parts = [f"<h1>idlsec results: {html.escape(run.name)}</h1>"]
    parts += [f'<p class="meta">{html.escape(line)}</p>' for line in header_lines(run)]
    for title, (head, rows) in tables.all_tables(run.groups, pooled):
        n_ident = next((i for i in range(len(head)) if tables.numeric_column(rows, i)), len(head))
        parts += [f"<h2>{html.escape(title)}</h2>", _table_html(head, rows, n_ident)]
    parts.append(f'<p class="legend">{html.escape(tables.LEGEND)}</p>')
    if plot_paths:
        parts.append('<h2>Plots</h2><div class="plots">')
        for p in plot_paths:
            data = base64.b64encode(Path(p).read_bytes()).decode()
            parts.append(f'<img class="plot" alt="{html.escape(Path(p).stem)}" src="data:image/png;base64,{data}">')
        parts.append("</div>")
    parts.append("<h2>Galleries</h2>")
    total = 0
    if gallery is None and run.kind == "attack":
        gallery = 8  # an `idlsec attack` directory keeps every image; bench runs keep `gallery` of them
    for g in run.groups:
        body, n = gallery_html(g, class_names(g.config.get("dataset")), gallery)
        total += n
        s = g.summary
        stats = f"n={s.get('n')}, ASR {tables.fmt(s.get('asr'), '{:.2f}')}, IoU {tables.fmt(s.get('iou_topk_mean'), '{:.2f}')}"
        parts.append(f'<details open class="config" data-key="{html.escape(g.key)}" data-tiles="{n}">'
                     f"<summary>{html.escape(g.title)}: {html.escape(stats)}</summary>{body}</details>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f"<title>idlsec report: {html.escape(run.name)}</title><style>{CSS}</style></head>"
            f'<body data-tiles-expected="{total}">' + "\n".join(parts) + f"<script>{SCRIPT}</script></body></html>\n")
