"""Sanity checks and scores of attribution maps, a sibling of `idc.explain`.

- `stage`: the sanity stage (`make sanity`): randomization tests, Table 5.2, figures.
- `leaderboard`: the leaderboard stage (`make leaderboard`): runs `scoring`, writes the method leaderboard.
- `randomization`: randomized copies of a trained model (cascading, independent).
- `similarity`: map similarity measures (Spearman, SSIM, HOG).
- `localization`: scores of maps against a pixel ground-truth mask.
- `faithfulness`: deletion curves and ROAD (scores that query the model).
- `scoring`: localization, faithfulness and shortcut scores of every map source.
- `plots`: the stage's figures.
"""
