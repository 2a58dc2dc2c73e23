"""Speed and memory measured as ratios against a naive baseline run in the same command:
training (`train_throughput`), embedding (`embed_throughput`), XGBoost workers
(`xgboost_workers`) and a sweep's per-trial fixed cost (`sweep_overhead`, with `timeline`).
Each has a `--smoke-test` the tests run; the figures and how to read them are in README.md."""
