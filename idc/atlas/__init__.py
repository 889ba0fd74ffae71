"""Attribution landscapes (`make atlas`, the stage `idc.atlas.stage`): every patch of the chosen patients
explained, one shard per patient, the maps stitched into each patient's tissue beside its P(IDC) landscape.

- `shards`: which patients, which shard computes which (balanced by patches), the per-patient work and the
  exactly-once merge.
- `canvas`: full-resolution canvases of a patient's maps, the display scale and colours (also the viewer's).
- `figures`: the per-patient figure and the full-resolution overlays.
"""
