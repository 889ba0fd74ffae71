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
- `inference`: the verdicts' statistics: t-intervals on patient means (k - 1 df), "too few patients"
  below 5, Holm's correction, rank intervals and Krippendorff's alpha of per-patient rankings.
- `calibration`: the seeded null simulation that shows those verdicts' error rate
  (`python -m idc.scores.calibration` prints the table of docs/attribution-evaluation.md).
- `bootstrap`: the patient-clustered percentile bootstrap (the interval the verdicts used before; too
  narrow with few patients, kept as the calibration table's "before").
"""
