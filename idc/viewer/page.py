"""The viewer page: bokeh models laid out in tabs, written as one standalone HTML file.

Bokeh does the drawing, pan/zoom, hover and tap; the few CustomJS callbacks below only move data
between sources (patient switch), flip `visible` (layers) and set the panel's pre-built HTML.
All HTML shown in the page is built and escaped in Python (idc.viewer.panels / overview).
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import List

import numpy as np
import pandas as pd
from bokeh.document import Document
from bokeh.embed import file_html
from bokeh.layouts import column, row
from bokeh.models import (BoxZoomTool, CheckboxGroup, ColorBar, ColumnDataSource, CustomJS, Div, HoverTool,
                          InlineStyleSheet, LinearColorMapper, Range1d, Select, Slider, TabPanel, Tabs, TapTool)
from bokeh.palettes import Viridis256
from bokeh.plotting import figure
from bokeh.resources import INLINE
from sklearn.metrics import average_precision_score, precision_recall_curve

from idc.atlas.canvas import LAYER_ALPHA, lut
from idc.overview import TABLE_CSS
from idc.viewer.assets import STORE

CSS = """
:host { font-family: system-ui, sans-serif; font-size: 13px; color: #222; }
.method table { font-size: 10px; margin: 2px 0; }
""" + TABLE_CSS
FRAME = 620  # px, square slide view
INTRO = ("<p>Hover a patch for its id, label, P(IDC) and outcome. Click a patch marked &#9670; "
         "(or pick one above) to see its attribution maps here.</p>")
NO_MAPS = "<p>This patch has no attribution maps; the explained patches are marked &#9670;.</p>"


def legend(has_predictions: bool, has_masks: bool, has_atlas: bool = False) -> str:
    """The key to the slide's layers, naming only the layers this page has."""
    parts = ["<span style='color:#d62728'>red tint</span> = IDC label"]
    if has_atlas:
        parts.append("attribution landscape = the chosen method's evidence for IDC on every patch (jet colours, "
                     "more opaque where stronger; 1 on its colour bar = the atlas's 99th percentile)")
    if has_predictions:
        parts += ["heat map = P(IDC) (colour bar)",
                  "outlines: <span style='color:#ff7f0e'>orange</span> = false positive, "
                  "<span style='color:#1f77b4'>blue</span> = false negative"]
    if has_masks:
        parts.append("<span style='color:#00aacc'>cyan</span> = evidence (IDC nuclei) mask of the synthetic set")
    parts.append("&#9670; = explained patch")
    return "<p><b>Layers</b>: " + "; ".join(parts) + ".</p>"


SWITCH_PATIENT = """
const P = patients.data;
const i = P.pid.indexOf(select.value);
if (i < 0) { return; }
const d = {};
for (const k of all.columns()) { d[k] = all.data[k].slice(P.start[i], P.stop[i]); }
shown.selected.indices = [];
shown.data = d;
const W = P.width[i], H = P.height[i], s = Math.max(W, H), key = select.value;
const place = (url) => url ? {url: [url], x: [0], y: [H], w: [W], h: [H]} : {url: [], x: [], y: [], w: [], h: []};
const show = (imgs) => { if (select.value === key) { tissue.data = place(imgs.tissue); mask.data = place(imgs.mask);
  atlas.data = place((imgs.atlas || {})[method.value] || ""); } };
const store = window[store_name] = window[store_name] || {};
tissue.data = place("");
mask.data = place("");
atlas.data = place("");
if (store[key]) { show(store[key]); } else {
  const tag = document.createElement("script");
  tag.src = P.script_url[i];
  tag.onload = () => show(store[key]);
  document.head.appendChild(tag);
}
xr.setv({start: (W - s) / 2, end: (W + s) / 2});
yr.setv({start: (H - s) / 2, end: (H + s) / 2});
explained.options = [["", "(choose an explained patch)"]].concat(P.explained_options[i]);
explained.value = "";
panel.text = intro;
"""
SHOW_PANEL = """
const idx = shown.selected.indices;
panel.text = idx.length === 0 ? intro : (shown.data.panel[idx[0]] || no_maps);
"""
PICK_EXPLAINED = "shown.selected.indices = cb_obj.value === '' ? [] : [parseInt(cb_obj.value)];"
PICK_METHOD = """
const P = patients.data, i = P.pid.indexOf(select.value);
const imgs = (window[store_name] || {})[select.value];
const url = (i >= 0 && imgs) ? ((imgs.atlas || {})[method.value] || "") : "";
const W = P.width[i], H = P.height[i];
atlas.data = url ? {url: [url], x: [0], y: [H], w: [W], h: [H]} : {url: [], x: [], y: [], w: [], h: []};
bar.visible = method.value !== "";
"""
OPACITY = "layer.glyph.global_alpha = cb_obj.value;"
TOGGLE = "layers.forEach((rs, i) => rs.forEach(r => { r.visible = cb_obj.active.includes(i); }));"


@dataclass
class PageContent:
    title: str
    subtitle: str
    table: pd.DataFrame  # inputs.patch_table + bokeh geometry + panel HTML (see stage.slide_columns)
    patients: pd.DataFrame  # pid, width, height, script_url, start, stop, label, explained_options
    has_predictions: bool
    has_masks: bool
    atlas_methods: dict = field(default_factory=dict)  # method -> title of the attribution landscapes (make atlas)
    notes: List[str] = field(default_factory=list)  # already HTML
    results_html: str = ""
    leaderboard_html: str = ""
    overview_html: str = ""
    pr: dict | None = None  # {"recall", "precision", "prevalence", "ap"} of the evaluated split


def _div(text: str, **kw) -> Div:
    return Div(text=text, stylesheets=[InlineStyleSheet(css=CSS)], **kw)


def _source(df: pd.DataFrame) -> ColumnDataSource:
    """A source from a frame's columns (bokeh's own DataFrame path adds an index column)."""
    return ColumnDataSource({k: (v.to_numpy() if v.dtype.kind in "biuf" else v.tolist()) for k, v in df.items()})


def _image_source() -> ColumnDataSource:
    """Filled by the patient switch (also run once when the page is ready) from the patient's script."""
    return ColumnDataSource({"url": [], "x": [], "y": [], "w": [], "h": []})


def slide_panel(c: PageContent):
    """The Slide tab: patient picker, layer toggles, the slide figure and the attribution panel."""
    all_src = _source(c.table)
    first = c.patients.iloc[0]
    shown = _source(c.table.iloc[int(first["start"]):int(first["stop"])])
    patients = _source(c.patients[["pid", "width", "height", "script_url", "start", "stop", "explained_options"]]
                       .assign(pid=c.patients["pid"].astype(str)))
    W, H = int(first["width"]), int(first["height"])
    s = max(W, H)
    xr, yr = Range1d((W - s) / 2, (W + s) / 2), Range1d((H - s) / 2, (H + s) / 2)
    p = figure(x_range=xr, y_range=yr, frame_width=FRAME, frame_height=FRAME, name="slide",
               tools=["pan", "wheel_zoom", BoxZoomTool(match_aspect=True), "reset", "save"], active_scroll="wheel_zoom",
               toolbar_location="above", title="stitched tissue (full resolution)")
    p.axis.visible = False
    p.grid.visible = False
    tissue, mask, atlas = _image_source(), _image_source(), _image_source()
    quad = dict(left="left", right="right", top="top", bottom="bottom", source=shown)
    layers = {"tissue": [p.image_url(url="url", x="x", y="y", w="w", h="h", anchor="top_left", source=tissue,
                                     name="layer-tissue")]}
    landscape = atlas_controls(p, atlas, c.atlas_methods)
    layers["ground-truth IDC tint"] = [p.quad(fill_color="#d62728", fill_alpha="gt_alpha", line_alpha=0, **quad)]
    if c.has_predictions:
        mapper = LinearColorMapper(palette=Viridis256, low=0, high=1, nan_color="rgba(0, 0, 0, 0)")
        heat = p.quad(fill_color={"field": "proba", "transform": mapper}, fill_alpha=0.55, line_alpha=0, name="layer-heat", **quad)
        bar = ColorBar(color_mapper=mapper, title="P(IDC)", width=12, visible=False)
        p.add_layout(bar, "right")
        heat.visible = False
        layers["P(IDC) heat map"] = [heat, bar]
        layers["errors (FP / FN outlines)"] = [p.quad(fill_alpha=0, line_color="err_color", line_alpha="err_alpha",
                                                      line_width=2, **quad)]
    if c.has_masks:
        layers["evidence mask"] = [p.image_url(url="url", x="x", y="y", w="w", h="h", anchor="top_left", source=mask)]
    layers["explained patches"] = [p.scatter("cx", "cy", marker="diamond", size=11, fill_color="white",
                                             line_color="black", fill_alpha="explained_alpha",
                                             line_alpha="explained_alpha", source=shown)]
    for rs in layers.values():
        for r in rs:
            if hasattr(r, "glyph"):
                r.nonselection_glyph = r.glyph
    hit = p.quad(fill_alpha=0, line_alpha=0, selection_line_color="black", selection_line_alpha=1,
                 selection_line_width=3, nonselection_fill_alpha=0, nonselection_line_alpha=0, name="layer-hit", **quad)
    p.add_tools(HoverTool(renderers=[hit], tooltips=[
        ("image id", "@image_id"), ("patient", "@patient_id"), ("x, y", "@x, @y"), ("label", "@label_text"),
        ("P(IDC)", "@proba_text"), ("outcome", "@outcome"), ("maps", "@maps_text")]))
    p.add_tools(TapTool(renderers=[hit]))

    names = list(layers)
    on = [i for i, n in enumerate(names) if n not in ("P(IDC) heat map", "evidence mask")]
    for i, n in enumerate(names):
        for r in layers[n]:
            r.visible = i in on
    toggles = CheckboxGroup(labels=names, active=on, name="layers")
    toggles.js_on_change("active", CustomJS(args=dict(layers=[layers[n] for n in names]), code=TOGGLE))

    options = [(str(r.pid), str(r.label)) for r in c.patients.itertuples()]
    select = Select(title="Patient", options=options, value=str(first["pid"]), name="patient", width=300)
    explained = Select(title="Explained patch", name="explained", width=300,
                       options=[("", "(choose an explained patch)")] + list(first["explained_options"]), value="")
    panel = _div(INTRO, name="panel", width=780)
    switch = CustomJS(args=dict(select=select, all=all_src, shown=shown, patients=patients, tissue=tissue, mask=mask,
                                xr=xr, yr=yr, explained=explained, panel=panel, intro=INTRO, store_name=STORE,
                                atlas=atlas, method=landscape["method"]), code=SWITCH_PATIENT)
    landscape["method"].js_on_change("value", CustomJS(args=dict(select=select, patients=patients, atlas=atlas,
                                                                 method=landscape["method"], bar=landscape["bar"],
                                                                 store_name=STORE), code=PICK_METHOD))
    select.js_on_change("value", switch)
    explained.js_on_change("value", CustomJS(args=dict(shown=shown), code=PICK_EXPLAINED))
    shown.selected.js_on_change("indices", CustomJS(args=dict(shown=shown, panel=panel, intro=INTRO, no_maps=NO_MAPS),
                                                    code=SHOW_PANEL))
    notes = _div("".join(f'<p class="missing">{n}</p>' for n in c.notes) +
                 legend(c.has_predictions, c.has_masks, bool(c.atlas_methods)), width=300)
    controls = [select, toggles] + ([landscape["method"], landscape["opacity"]] if c.atlas_methods else [])
    return row(column(*controls, explained, notes), p, panel), switch


def atlas_controls(p, source: ColumnDataSource, methods: dict) -> dict:
    """The attribution-landscape layer (one image over the tissue, filled per patient and method from the
    patient's script), its method picker, opacity slider and colour bar."""
    layer = p.image_url(url="url", x="x", y="y", w="w", h="h", anchor="top_left", source=source, name="layer-atlas",
                        global_alpha=1.0)
    options = [("", "none")] + [(m, t) for m, t in methods.items()]
    method = Select(title="Attribution landscape (make atlas)", options=options, value="", name="atlas-method", width=300)
    opacity = Slider(title="landscape opacity", start=0, end=1, step=0.05, value=1.0, name="atlas-opacity", width=300)
    opacity.js_on_change("value", CustomJS(args=dict(layer=layer), code=OPACITY))
    palette = ["#%02x%02x%02x" % tuple(int(v) for v in rgb) for rgb in lut("jet")]
    bar = ColorBar(color_mapper=LinearColorMapper(palette=palette, low=0, high=1), width=12, visible=False,
                   title=f"evidence (opacity up to {LAYER_ALPHA})")
    if methods:
        p.add_layout(bar, "right")
    return {"layer": layer, "method": method, "opacity": opacity, "bar": bar}


def pr_figure(pr: dict):
    p = figure(width=520, height=420, x_range=(0, 1), y_range=(0, 1.02), title="Precision-recall (test split)",
               x_axis_label="recall", y_axis_label="precision", tools="pan,wheel_zoom,reset,save,hover",
               tooltips=[("recall", "@x{0.000}"), ("precision", "@y{0.000}")])
    p.line(pr["recall"], pr["precision"], line_width=2, legend_label=f"ResNet-18, AP {pr['ap']:.3f}")
    p.line([0, 1], [pr["prevalence"]] * 2, line_dash="dashed", color="gray",
           legend_label=f"always-positive baseline (precision {pr['prevalence']:.3f})")
    p.legend.location = "bottom_left"
    return p


def build_page(c: PageContent) -> str:
    results = [_div(c.results_html, width=900)]
    if c.pr is not None:
        results.append(pr_figure(c.pr))
    results.append(_div(c.leaderboard_html, width=1100))
    slide, switch = slide_panel(c)
    tabs = Tabs(tabs=[
        TabPanel(child=slide, title="Slide"),
        TabPanel(child=column(*results), title="Results"),
        TabPanel(child=_div(c.overview_html, width=1100), title="Overview"),
    ])
    head = _div(f"<h1 style='margin:0.2em 0'>{html.escape(c.title)}</h1><p>{html.escape(c.subtitle)}</p>", width=1400)
    doc = Document()
    doc.add_root(column(head, tabs))
    doc.js_on_event("document_ready", switch)  # loads the first patient's images like any other's
    return file_html(doc, INLINE, title=c.title)


def pr_points(target, proba) -> dict:
    """Precision-recall points of P(IDC) and the always-positive baseline's precision (the prevalence)."""
    y, s = np.asarray(target, dtype=int), np.asarray(proba, dtype=float)
    precision, recall, _ = precision_recall_curve(y, s)
    return {"recall": recall.tolist(), "precision": precision.tolist(), "prevalence": float(y.mean()),
            "ap": float(average_precision_score(y, s))}
