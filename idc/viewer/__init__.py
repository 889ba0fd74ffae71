"""Interactive viewer of a run (`make view`): tissue, P(IDC) landscape, errors and attribution maps.

`run` is imported lazily: idc.report uses idc.viewer.overview without loading bokeh.
"""


def run(cfg):
    from idc.viewer.stage import run as _run

    return _run(cfg)
