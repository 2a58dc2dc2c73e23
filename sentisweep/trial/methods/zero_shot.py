"""Zero-shot prompting of a decoder: no training; each class is one word, and the class
probabilities are the softmax over those words' next-token logits after the prompt."""

from __future__ import annotations

import numpy as np
from pydantic import Field, field_validator

from sentisweep.trial.methods.base import (
    BuiltModel,
    IncompatibleMethodError,
    LoadOptions,
    MethodParams,
    MethodSpec,
    body_dtype,
    no_kv_cache,
    register_method,
    with_pad_token,
)
from sentisweep.trial.models import ModelSpec, materialize


def build_zero_shot(model: ModelSpec, params, num_labels: int, opts: LoadOptions) -> BuiltModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = materialize(model, opts.cache_dir)
    tok = with_pad_token(AutoTokenizer.from_pretrained(model.resolve_tokenizer()))
    net = AutoModelForCausalLM.from_pretrained(path, dtype=body_dtype(opts))
    no_kv_cache(net)
    for parameter in net.parameters():
        parameter.requires_grad = False
    return BuiltModel(net, tok)


def encode_prompts(tok, params: dict, texts: list[str], max_length: int) -> tuple[list[list[int]], list[int]]:
    """(token ids of each text's prompt, the first token of each label word). Each text is cut so
    that its prompt fits max_length. A chat model's tokenizer carries a chat template: the prompt
    is then the user's turn and the answer starts the assistant's (thinking off, as Qwen3's
    template allows), and each label word is scored without its leading space."""
    chat = params.get("chat", True) and getattr(tok, "chat_template", None)

    def wrap(prompt: str) -> str:
        if not chat:
            return prompt
        return tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                       add_generation_prompt=True, enable_thinking=False)

    words = [w.strip() if chat else w for w in params["label_words"]]
    word_ids = [tok(w, add_special_tokens=False)["input_ids"][0] for w in words]
    prompt_tokens = len(tok(wrap(params["prompt"].format(text="")), add_special_tokens=False)["input_ids"])
    budget = max(1, max_length - prompt_tokens)  # truncate the text, keep the prompt
    encoded = []
    for text in texts:
        ids = tok(text, add_special_tokens=False, truncation=True, max_length=budget)["input_ids"]
        encoded.append(tok(wrap(params["prompt"].format(text=tok.decode(ids))), add_special_tokens=False)["input_ids"])
    return encoded, word_ids


def evaluate_zero_shot(built: BuiltModel, params: dict, texts: list[str], label_names: list[str],
                       max_length: int, batch_size: int, device: str) -> np.ndarray:
    """(n, classes) probabilities of `texts`: the softmax over the label words' next-token
    logits after each prompt. Only the last real position goes through the output layer: the
    full vocabulary's logits at every position (Qwen3-4B, 64 x 512: about 10 GB) are never made."""
    import torch

    from sentisweep.trial.batching import pad_right

    if len(params["label_words"]) != len(label_names):
        raise IncompatibleMethodError(f"method.label_words = {params['label_words']!r}: {len(params['label_words'])} "
                                      f"words for {len(label_names)} classes {label_names}")
    tok, model = built.tokenizer, built.model.to(device).eval()
    encoded, word_ids = encode_prompts(tok, params, texts, max_length)
    body, output_layer = model.get_decoder(), model.get_output_embeddings()
    order = np.argsort([len(e) for e in encoded], kind="stable")
    probabilities = np.empty((len(encoded), len(word_ids)))
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            input_ids, mask = pad_right([encoded[i] for i in rows], tok.pad_token_id)
            hidden = body(input_ids=input_ids.to(device), attention_mask=mask.to(device), use_cache=False)
            last = (mask.sum(dim=1) - 1).to(device)  # right padding: the last real token
            last_hidden = hidden.last_hidden_state[torch.arange(len(rows), device=device), last]
            next_token = output_layer(last_hidden)[:, word_ids].float()
            probabilities[rows] = torch.softmax(next_token, dim=-1).cpu().numpy()
    return probabilities


class ZeroShotParams(MethodParams):
    prompt: str = "Review: {text}\nSentiment (positive or negative):"
    label_words: list[str] = Field([" negative", " positive"], min_length=2)  # one word per class
    chat: bool = True  # use the tokenizer's chat template when it has one

    @field_validator("prompt")
    @classmethod
    def _has_text(cls, value: str) -> str:
        if "{text}" not in value:
            raise ValueError("must contain '{text}'")
        return value


register_method(MethodSpec(
    "zero-shot", build_zero_shot, ZeroShotParams,
    families=("decoder",), evaluate=evaluate_zero_shot,
    description="no training: compare the next-token logits of one word per class (in the model's chat "
                "template when it has one)"))
