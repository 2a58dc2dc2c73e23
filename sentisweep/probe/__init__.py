"""Frozen embeddings + a classical classifier (a "probe"): sentence embeddings of a registry
model or a trial's checkpoint (`embeddings`, with oneDNN-packed linears on CPU: `onednn`),
XGBoost on them as a TrialResult row (`booster`), the embed_xgb config that pairs pretrained
and fine-tuned embeddings (`embed_xgb_config`), and the TF-IDF baseline every sweep can carry
(`baselines`). The Ray jobs that run them at scale are in `ray_jobs/`."""
