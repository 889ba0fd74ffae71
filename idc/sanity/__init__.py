"""The sanity stage (`make sanity`): do the attribution maps depend on the model and on the data?

- `stage`: `run(cfg)`: MPRT (cascading and independent), sMPRT, eMPRT and data randomization.
- `memorization`: the random-label model of the data-randomization test, and its precondition.
- `verdicts`: from per-patch similarities to pass / fail / invalid with patient-clustered CIs.
- `table`: Table 5.2 (the book's verdicts beside ours).
- `plots`: the stage's figures.
The randomized model copies and the similarity measures are plain functions in `idc.scores`; the maps
come from the explain driver. Localization, faithfulness and the leaderboard: `idc.leaderboard`.
"""
