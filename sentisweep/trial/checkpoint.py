"""A trial's checkpoint loaded back, the one way predict, export and the embedder load it: a full
classifier, or a peft adapter on its registry model merged into the weights."""

from __future__ import annotations

from pathlib import Path

from sentisweep.exit_codes import BadInput
from sentisweep.layout import TRIAL_INFO_FILE
from sentisweep.results import trial_info
from sentisweep.trial.methods.base import no_kv_cache, with_pad_token
from sentisweep.trial.models import ModelSpec, get_model_spec, materialize


def load_checkpoint(folder: Path, cache_dir: str, label_names: list[str], base: ModelSpec | None = None,
                    merge: bool = True, **load_kwargs):
    """(classifier, tokenizer) of the checkpoint in `folder`. An adapter goes on `base`, else on the
    model its sentisweep_trial.json names, and is merged into the weights: one matmul per layer
    instead of two. Weights load in fp32 unless `load_kwargs` quantize them: a base stored in
    fp16 would otherwise take the adapter in half precision. `merge=False` (4/8-bit weights
    cannot absorb an adapter) keeps its layers beside them."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    tokenizer = with_pad_token(AutoTokenizer.from_pretrained(str(folder)))
    if "quantization_config" not in load_kwargs:
        load_kwargs.setdefault("dtype", torch.float32)
    load_kwargs.update(num_labels=len(label_names), id2label=dict(enumerate(label_names)),
                       label2id={name: i for i, name in enumerate(label_names)})
    if (folder / "adapter_config.json").is_file():
        from peft import PeftModel

        model_name = base.name if base else trial_info(folder).get("model")
        if not model_name:
            raise BadInput(f"{folder}: a peft adapter without {TRIAL_INFO_FILE}: which base model it belongs to "
                           "is unknown")
        # the base's head is fresh and the adapter then brings the trained one (modules_to_save):
        # transformers' LOAD REPORT ("classifier MISSING: newly initialized") would alarm falsely
        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            classifier = AutoModelForSequenceClassification.from_pretrained(
                materialize(base or get_model_spec(model_name), cache_dir), **load_kwargs)
        finally:
            hf_logging.set_verbosity(level)
        if classifier.config.pad_token_id is None:  # a decoder finds each row's last token by it
            classifier.config.pad_token_id = tokenizer.pad_token_id
        adapted = PeftModel.from_pretrained(classifier, str(folder))
        model = adapted.merge_and_unload() if merge else adapted.get_base_model()
    else:
        model = AutoModelForSequenceClassification.from_pretrained(str(folder), **load_kwargs)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    no_kv_cache(model)
    return model, tokenizer
