"""The leaderboard stage (`make leaderboard`): which attribution method should I use?

- `stage`: `run(cfg)`, the stage: patches, map sources, scores, tables and figures.
- `sources`: the map sources (rows): methods, their variants (argument overrides), each one's maps from
  the fully randomized model, and the model-free controls; their maps through the one explain driver.
- `scoring`: which patches are scored, each source's localization / faithfulness / shortcut scores, and
  the per-source summary with patient-clustered CIs.
- `board`: the leaderboard table and its markdown (controls beaten, randomization verdicts).
- `plots`: the forest plot and the localization examples.
The scores themselves are plain functions in `idc.scores`; the sanity stage (`idc.sanity`) writes the
randomization verdicts the board shows.
"""
