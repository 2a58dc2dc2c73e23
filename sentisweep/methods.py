"""Method registry: how a loaded model is made trainable (or not) for one trial.

A method is one `register_method(...)` call with its parameters and their defaults,
the model families it supports, and a `build` function. Impossible combinations
raise `IncompatibleMethodError`, which a trial records as status `skipped`.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sentisweep.config import MethodConfig
from sentisweep.models import ModelSpec, UnknownNameError, linear_layout, materialize


class IncompatibleMethodError(RuntimeError):
    """This method cannot run with this model or on this machine (recorded as skipped)."""


PLACEMENTS = ("attention", "ffn", "attention+ffn", "all-linear")


@dataclass
class BuiltModel:
    model: Any
    tokenizer: Any
    head_modules: list[str]
    adapted_modules: list[str] = field(default_factory=list)
    is_peft: bool = False
    trains: bool = True  # zero-shot does not


@dataclass(frozen=True)
class LoadOptions:
    """How to load a model for one trial, the same for every method."""

    cache_dir: str = ".sentisweep_cache"
    device: str = "cpu"
    precision: str = "fp32"
    # None keeps the model's own value. 0 lets torch's fused SDPA kernel run in training:
    # dropout on the attention probabilities forces the materialised (bmm + softmax) path.
    attention_dropout: float | None = None


@dataclass(frozen=True)
class MethodSpec:
    name: str
    build: Callable[..., BuiltModel]
    defaults: dict[str, Any]
    families: tuple[str, ...] = ("encoder", "decoder")
    description: str = ""
    needs_bitsandbytes: bool = False
    trains: bool = True  # zero-shot does not (and needs no tokenization cache)


METHODS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    METHODS[spec.name] = spec
    return spec


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise UnknownNameError(f"method = {name!r}: unknown; known: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def resolved_params(method: MethodConfig) -> dict[str, Any]:
    """The method's defaults updated by what the config set."""
    return {**get_method(method.name).defaults, **method.params()}


def method_problems(method: MethodConfig) -> list[str]:
    if method.name not in METHODS:
        return [f"method.name = {method.name!r}: unknown; known: {', '.join(sorted(METHODS))}"]
    spec = METHODS[method.name]
    problems = [
        f"method.{key} = {value!r}: not a parameter of method {spec.name!r}; "
        f"it takes: {', '.join(spec.defaults) or 'no parameters'}"
        for key, value in method.params().items() if key not in spec.defaults
    ]
    if problems:
        return problems
    params = resolved_params(method)
    if "r" in params and params["r"] <= 0:
        problems.append(f"method.r = {params['r']!r}: LoRA rank must be an integer > 0")
    if "alpha" in params and params["alpha"] <= 0:
        problems.append(f"method.alpha = {params['alpha']!r}: must be > 0")
    if "dropout" in params and not 0 <= params["dropout"] < 1:
        problems.append(f"method.dropout = {params['dropout']!r}: must be in [0, 1)")
    placement = params.get("placement")
    if isinstance(placement, str) and placement not in PLACEMENTS:
        problems.append(f"method.placement = {placement!r}: allowed: {', '.join(PLACEMENTS)} "
                        "or a list of module names")
    words = params.get("label_words")
    if words is not None and len(words) < 2:
        problems.append(f"method.label_words = {words!r}: need one word per class (>= 2)")
    if "prompt" in params and "{text}" not in params["prompt"]:
        problems.append(f"method.prompt = {params['prompt']!r}: must contain '{{text}}'")
    return problems


def check_compatible(method: MethodConfig, model: ModelSpec, device: str) -> None:
    """Raise IncompatibleMethodError for combinations that cannot run (a sweep skips them)."""
    spec = get_method(method.name)
    if model.family not in spec.families:
        raise IncompatibleMethodError(
            f"method {spec.name!r} needs a {' or '.join(spec.families)} model; "
            f"{model.name!r} is an {model.family}")
    if spec.needs_bitsandbytes:
        if importlib.util.find_spec("bitsandbytes") is None:
            raise IncompatibleMethodError(f"method {spec.name!r} needs bitsandbytes, which is not installed")
        if device not in ("cpu", "cuda"):
            raise IncompatibleMethodError(f"method {spec.name!r}: bitsandbytes cannot quantize on {device!r}")


# -- loading -------------------------------------------------------------------------

ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout")  # BERT-like, DistilBERT/Qwen


def _model_config(model: ModelSpec, opts: LoadOptions, **overrides):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(materialize(model, opts.cache_dir), **overrides)
    if opts.attention_dropout is not None:
        for key in ATTENTION_DROPOUT_KEYS:
            if hasattr(config, key):
                setattr(config, key, opts.attention_dropout)
    return config


def _load_classifier(model: ModelSpec, num_labels: int, opts: LoadOptions, **kwargs):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = materialize(model, opts.cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(model.resolve_tokenizer())
    config = _model_config(model, opts, num_labels=num_labels)
    net = AutoModelForSequenceClassification.from_pretrained(path, config=config, **kwargs)
    if tokenizer.pad_token is None:  # decoders (Qwen3, GPT-style) often ship without one
        tokenizer.pad_token = tokenizer.eos_token
    if net.config.pad_token_id is None:  # sequence classification finds the last token by it
        net.config.pad_token_id = tokenizer.pad_token_id
    return net, tokenizer


def _body_dtype(opts: LoadOptions):
    """Adapter methods may hold frozen weights in half precision on CUDA; fp32 elsewhere."""
    import torch

    if opts.device == "cuda" and opts.precision in ("bf16", "fp16"):
        return {"bf16": torch.bfloat16, "fp16": torch.float16}[opts.precision]
    return torch.float32


def _build_full(model, params, num_labels, opts):
    net, tok = _load_classifier(model, num_labels, opts)
    heads = linear_layout(net, net.config.model_type).head_modules
    return BuiltModel(net, tok, heads)


def _build_head_only(model, params, num_labels, opts):
    net, tok = _load_classifier(model, num_labels, opts)
    heads = linear_layout(net, net.config.model_type).head_modules
    for name, parameter in net.named_parameters():
        parameter.requires_grad = any(h in name.split(".") for h in heads)
    return BuiltModel(net, tok, heads)


def _peft_wrap(net, tok, peft_config_cls, placement, extra: dict[str, Any]) -> BuiltModel:
    from peft import TaskType, get_peft_model

    layout = linear_layout(net, net.config.model_type)
    targets = layout.resolve(placement)
    if peft_config_cls.__name__ == "IA3Config":  # IA3 scales the *input* of feed-forward layers
        extra = {**extra, "feedforward_modules": [t for t in targets if t in layout.ffn]}
    config = peft_config_cls(task_type=TaskType.SEQ_CLS, target_modules=targets,
                             modules_to_save=list(layout.head_modules), **extra)  # peft appends to it
    return BuiltModel(get_peft_model(net, config), tok, layout.head_modules, targets, is_peft=True)


def _lora_kwargs(params: dict[str, Any], dora: bool) -> dict[str, Any]:
    return dict(r=params["r"], lora_alpha=params["alpha"], lora_dropout=params["dropout"], use_dora=dora)


def _build_lora(model, params, num_labels, opts, dora=False):
    from peft import LoraConfig

    net, tok = _load_classifier(model, num_labels, opts, dtype=_body_dtype(opts))
    return _peft_wrap(net, tok, LoraConfig, params["placement"], _lora_kwargs(params, dora))


def _build_dora(*args):
    return _build_lora(*args, dora=True)


def _build_qlora(model, params, num_labels, opts):
    import torch
    from peft import LoraConfig, prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    compute = params["compute_dtype"]
    if compute == "auto":  # no bf16 units on these CPUs: fp32 compute there
        compute = "float32" if opts.device == "cpu" else ("bfloat16" if opts.precision != "fp16" else "float16")
    from sentisweep.models import arch_spec

    model_type = _model_config(model, opts).model_type
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
    net, tok = _load_classifier(model, num_labels, opts, quantization_config=quant,
                                device_map={"": 0} if opts.device == "cuda" else {"": "cpu"})
    net = prepare_model_for_kbit_training(net, use_gradient_checkpointing=opts.device == "cuda")
    return _peft_wrap(net, tok, LoraConfig, params["placement"], _lora_kwargs(params, dora=False))


def _build_ia3(model, params, num_labels, opts):
    from peft import IA3Config

    net, tok = _load_classifier(model, num_labels, opts, dtype=_body_dtype(opts))
    return _peft_wrap(net, tok, IA3Config, params["placement"], {})


def _build_zero_shot(model, params, num_labels, opts):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = materialize(model, opts.cache_dir)
    tok = AutoTokenizer.from_pretrained(model.resolve_tokenizer())
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    net = AutoModelForCausalLM.from_pretrained(path, dtype=_body_dtype(opts))
    for parameter in net.parameters():
        parameter.requires_grad = False
    return BuiltModel(net, tok, head_modules=[], trains=False)


_LORA = {"r": 8, "alpha": 16.0, "dropout": 0.1, "placement": "attention"}

register_method(MethodSpec("full", _build_full, {}, description="every parameter trains"))
register_method(MethodSpec("head-only", _build_head_only, {},
                           description="frozen body, only the classifier head trains"))
register_method(MethodSpec("lora", _build_lora, dict(_LORA), description="LoRA adapters (peft)"))
register_method(MethodSpec("dora", _build_dora, dict(_LORA),
                           description="weight-decomposed LoRA (peft use_dora)"))
register_method(MethodSpec(
    "qlora", _build_qlora,
    {**_LORA, "quant_type": "nf4", "double_quant": True, "compute_dtype": "auto"},
    description="LoRA on a 4-bit (NF4) quantized body; bitsandbytes, CPU or CUDA",
    needs_bitsandbytes=True))
register_method(MethodSpec("ia3", _build_ia3, {"placement": "attention+ffn"},
                           description="IA3 learned rescaling vectors (peft)"))
register_method(MethodSpec(
    "zero-shot", _build_zero_shot,
    {"prompt": "Review: {text}\nSentiment (positive or negative):",
     "label_words": [" negative", " positive"]},
    families=("decoder",), trains=False,
    description="no training: compare the next-token logits of one word per class"))


def build(method: MethodConfig, model: ModelSpec, num_labels: int, opts: LoadOptions) -> BuiltModel:
    check_compatible(method, model, opts.device)
    return get_method(method.name).build(model, resolved_params(method), num_labels, opts)
