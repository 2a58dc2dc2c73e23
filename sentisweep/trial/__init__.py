"""One trial, no Ray: the labelled data and its splits (`data`, `split_cache`), tokenization
cached per tokenizer and length (`tokenization`), batches (`batching`), the model registry
(`models`), the method registry with each method's build and evaluation (`methods/`), the
device (`device`), the memory planner (`memory`), quality and cost measurements (`metrics`),
and `run.run_trial`, which
trains with the Hugging Face Trainer and writes the TrialResult row."""
