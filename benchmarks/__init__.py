"""Speed and memory measured as ratios against a naive baseline run in the same command:
training (`train_throughput`), embedding (`embed_throughput`), XGBoost workers
(`xgboost_workers`) and a sweep's per-trial fixed cost (`sweep_overhead`, with `timeline`); the
memory planner against measured memory (`memory_estimate`); a GPU machine's one-command check
(`gpu_check`, on tiny Hub-shaped model folders: `hub_shaped`).
Each has a `--smoke-test` the tests run; the figures and how to read them are in README.md."""
