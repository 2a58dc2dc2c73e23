"""Zero-shot prompting of a decoder: no training; each class is one word, and the class
probabilities are the softmax over those words' next-token logits after the prompt."""

from __future__ import annotations

import numpy as np

from sentisweep.trial.methods.base import (
    BuiltModel,
    IncompatibleMethodError,
    LoadOptions,
    MethodSpec,
    body_dtype,
    register_method,
)
from sentisweep.trial.models import ModelSpec, materialize


def build_zero_shot(model: ModelSpec, params, num_labels: int, opts: LoadOptions) -> BuiltModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = materialize(model, opts.cache_dir)
    tok = AutoTokenizer.from_pretrained(model.resolve_tokenizer())
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    net = AutoModelForCausalLM.from_pretrained(path, dtype=body_dtype(opts))
    for parameter in net.parameters():
        parameter.requires_grad = False
    return BuiltModel(net, tok, head_modules=[])


def evaluate_zero_shot(built: BuiltModel, params: dict, texts: list[str], label_names: list[str],
                       max_length: int, batch_size: int, device: str) -> np.ndarray:
    """(n, classes) probabilities of `texts`, each cut so that the prompt fits max_length."""
    import torch

    from sentisweep.trial.batching import pad_right

    tok, model = built.tokenizer, built.model.to(device).eval()
    words = params["label_words"]
    if len(words) != len(label_names):
        raise IncompatibleMethodError(f"method.label_words = {words!r}: {len(words)} words for "
                                      f"{len(label_names)} classes {label_names}")
    word_ids = [tok(w, add_special_tokens=False)["input_ids"][0] for w in words]
    prompt_tokens = len(tok(params["prompt"].format(text=""), add_special_tokens=False)["input_ids"])
    budget = max(1, max_length - prompt_tokens)  # truncate the text, keep the prompt
    prompts = []
    for text in texts:
        ids = tok(text, add_special_tokens=False, truncation=True, max_length=budget)["input_ids"]
        prompts.append(params["prompt"].format(text=tok.decode(ids)))
    encoded = tok(prompts, add_special_tokens=False)["input_ids"]
    order = np.argsort([len(e) for e in encoded], kind="stable")
    probabilities = np.empty((len(encoded), len(words)))
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            input_ids, mask = pad_right([encoded[i] for i in rows], tok.pad_token_id)
            logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
            last = mask.sum(dim=1) - 1  # right padding: the last real token
            next_token = logits[torch.arange(len(rows)), last.to(device)][:, word_ids].float()
            probabilities[rows] = torch.softmax(next_token, dim=-1).cpu().numpy()
    return probabilities


register_method(MethodSpec(
    "zero-shot", build_zero_shot,
    {"prompt": "Review: {text}\nSentiment (positive or negative):", "label_words": [" negative", " positive"]},
    families=("decoder",), evaluate=evaluate_zero_shot,
    description="no training: compare the next-token logits of one word per class"))
