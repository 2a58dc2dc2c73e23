"""Use a sweep's winner: pick a trial from a results store and classify texts with it
(`predict`), export it as a plain Hugging Face folder (`export`), or serve it on a web page
(`demo`). Run as `python -m sentisweep.predict|export|demo`."""
