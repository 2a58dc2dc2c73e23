"""peft adapter methods: LoRA, DoRA, QLoRA (LoRA on a 4-bit body) and IA3. The classifier
head is never adapted and never quantized: it trains in full (`modules_to_save`)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from sentisweep.config import PLACEMENTS
from sentisweep.trial.methods.base import (
    BuiltModel,
    MethodParams,
    MethodSpec,
    body_dtype,
    load_classifier,
    loaded_config,
    quantized_queries_in_autocast_dtype,
    register_method,
)
from sentisweep.trial.models import arch_spec, linear_layout


def peft_wrap(net, tok, peft_config_cls, placement, extra: dict[str, Any]) -> BuiltModel:
    from peft import TaskType, get_peft_model

    layout = linear_layout(net, net.config.model_type)
    targets = layout.resolve(placement)
    if peft_config_cls.__name__ == "IA3Config":  # IA3 scales the *input* of feed-forward layers
        extra = {**extra, "feedforward_modules": [t for t in targets if t in layout.ffn]}
    config = peft_config_cls(task_type=TaskType.SEQ_CLS, target_modules=targets,
                             modules_to_save=list(layout.head_modules), **extra)  # peft appends to it
    return BuiltModel(get_peft_model(net, config), tok, is_peft=True)


def lora_kwargs(params: dict[str, Any], dora: bool) -> dict[str, Any]:
    return dict(r=params["r"], lora_alpha=params["alpha"], lora_dropout=params["dropout"], use_dora=dora)


def build_lora(model, params, num_labels, opts, dora=False):
    from peft import LoraConfig

    net, tok = load_classifier(model, num_labels, opts, dtype=body_dtype(opts))
    return peft_wrap(net, tok, LoraConfig, params["placement"], lora_kwargs(params, dora))


def build_dora(*args):
    return build_lora(*args, dora=True)


def build_qlora(model, params, num_labels, opts):
    import torch
    from peft import LoraConfig, prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    compute = params["compute_dtype"]
    if compute == "auto":  # no bf16 units on these CPUs: fp32 compute there
        compute = "float32" if opts.device == "cpu" else ("bfloat16" if opts.precision != "fp16" else "float16")
    model_type = loaded_config(model, opts).model_type
    heads = list(arch_spec(model_type).head_modules) or ["classifier", "score"]
    quant = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=params["quant_type"],
        bnb_4bit_use_double_quant=params["double_quant"],
        bnb_4bit_compute_dtype=getattr(torch, compute),
        # The head stays in full precision: a quantized head failed in peft's forward here.
        # transformers matches these from the start of a module path, so a nested head
        # (BERT's bert.pooler) needs the optional prefix.
        llm_int8_skip_modules=[rf"(?:.*\.)?{re.escape(h)}" for h in heads],
    )
    net, tok = load_classifier(model, num_labels, opts, quantization_config=quant,
                               device_map={"": 0} if opts.device == "cuda" else {"": "cpu"})
    # gradient checkpointing is a training option like any other (training.gradient_checkpointing)
    net = prepare_model_for_kbit_training(net, use_gradient_checkpointing=False)
    built = peft_wrap(net, tok, LoraConfig, params["placement"], lora_kwargs(params, dora=False))
    quantized_queries_in_autocast_dtype(built.model)
    return built


def build_ia3(model, params, num_labels, opts):
    from peft import IA3Config

    net, tok = load_classifier(model, num_labels, opts, dtype=body_dtype(opts))
    return peft_wrap(net, tok, IA3Config, params["placement"], {})


class AdapterParams(MethodParams):
    # attention | ffn | attention+ffn | all-linear, or a list of module name suffixes
    placement: str | list[str] = "attention"

    @field_validator("placement")
    @classmethod
    def _known_placement(cls, value):
        if isinstance(value, str) and value not in PLACEMENTS:
            raise ValueError(f"allowed: {', '.join(PLACEMENTS)} or a list of module names")
        return value


class LoraParams(AdapterParams):
    r: int = Field(8, gt=0)  # the rank: A is r x in, B out x r
    alpha: float = Field(16.0, gt=0)  # the update is scaled by alpha / r
    dropout: float = Field(0.1, ge=0, lt=1)  # on the adapter's input


class QLoraParams(LoraParams):
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"


class IA3Params(AdapterParams):
    placement: str | list[str] = "attention+ffn"


def lora_size(params: dict, modules: dict, layout, targets: list[str], dora: bool = False) -> tuple[int, float]:
    """A (r x in) and B (out x r) per target, DoRA a magnitude per output; kept per token: the
    input after the dropout and its 1-byte mask (1.25 x the input width), and the r values of A."""
    weights = sum(params["r"] * (modules[t].in_features + modules[t].out_features) for t in targets)
    weights += sum(modules[t].out_features for t in targets) if dora else 0
    kept = sum((1.25 if params["dropout"] else 1) * modules[t].in_features + params["r"] for t in targets)
    return weights, kept


def dora_size(*args) -> tuple[int, float]:
    return lora_size(*args, dora=True)


def ia3_size(params: dict, modules: dict, layout, targets: list[str]) -> tuple[int, float]:
    """One scale per input feature (feed-forward layers) or output feature; the scaled vector is kept."""
    size = sum(modules[t].in_features if t in layout.ffn else modules[t].out_features for t in targets)
    return size, size


LORA_LEARNING_RATES = (1e-4, 5e-3)
register_method(MethodSpec("lora", build_lora, LoraParams, adapter_size=lora_size, description="LoRA adapters (peft)",
                           learning_rates=LORA_LEARNING_RATES))
register_method(MethodSpec("dora", build_dora, LoraParams, adapter_size=dora_size, learning_rates=LORA_LEARNING_RATES,
                           description="weight-decomposed LoRA (peft use_dora)"))
register_method(MethodSpec(
    "qlora", build_qlora, QLoraParams, adapter_size=lora_size,
    description="LoRA on a 4-bit (NF4) quantized body; bitsandbytes, CPU or CUDA", learning_rates=LORA_LEARNING_RATES,
    needs_bitsandbytes=True, frozen_in_fp32=True))
# IA3 trains a few vectors and wants rates several times LoRA's (5e-4 left it under-trained: issue 26)
register_method(MethodSpec("ia3", build_ia3, IA3Params, adapter_size=ia3_size, learning_rates=(1e-3, 5e-2),
                           description="IA3 learned rescaling vectors (peft)"))
