"""Sanity checks and scores of attribution maps, a sibling of `idc.explain`.

- `stage`: the sanity stage (`make sanity`): randomization tests, Table 5.2, figures.
- `randomization`: randomized copies of a trained model (cascading, independent).
- `similarity`: map similarity measures (Spearman, SSIM, HOG).
- `localization`: scores of maps against a pixel ground-truth mask.
- `faithfulness`: deletion curves and ROAD (scores that query the model).
- `scoring`: the localization/faithfulness part of the stage.
- `plots`: the stage's figures.
"""
