"""Ray Data and Ray Train jobs: `embed.py` (sentence embeddings of every split, Ray Data),
`xgboost_stage.py` (XGBoost on them, Ray Train) and `embed_xgb.py` (both, per model, for a
whole study). Ray-specific lines are marked `# [Ray]`."""
