"""Scores of attribution maps as plain functions on arrays, a sibling of `idc.explain` (as `captum/metrics`
sits beside `captum/attr` and pytorch-grad-cam's `metrics/` beside its methods). No stage code, no config:
the sanity stage (`idc.sanity`) and the leaderboard stage (`idc.leaderboard`) call these.

- `similarity`: map similarity measures of the randomization tests (Spearman, SSIM, HOG, entropy).
- `localization`: scores of maps against a pixel ground-truth mask (Quantus definitions).
- `faithfulness`: deletion and insertion curves, ROAD (scores that query the model).
- `controls`: maps that look at the image but not at the model (random, edges, darkness).
- `randomization`: randomized copies of a trained model (the randomization tests and the
  randomized-model control rows).
- `nuclei`: scores against a label map of IDC and decoy nuclei and the counterfactual evidence check
  (synthetic set, generator v7; docs/data.md).
- `bootstrap`: patient-clustered bootstrap confidence intervals.
"""
