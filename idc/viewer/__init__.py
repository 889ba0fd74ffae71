"""Interactive viewer of a run (`make view`, the stage `idc.viewer.stage`): tissue, P(IDC) landscape,
errors and attribution maps, drawn with bokeh (imported by the stage and the page only)."""
