"""The method registry, what every method shares (validation, loading a classifier), and
`build` / `evaluate` for one trial. Each method registers itself beside its code
(`finetune.py`, `adapters.py`, `zero_shot.py`)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from sentisweep.config import MethodConfig, default_cache_dir, format_pydantic
from sentisweep.registry import Registry
from sentisweep.trial.models import ModelSpec, materialize


class IncompatibleMethodError(RuntimeError):
    """This method cannot run with this model or on this machine (recorded as skipped)."""


@dataclass
class BuiltModel:
    model: Any
    tokenizer: Any
    is_peft: bool = False


@dataclass(frozen=True)
class LoadOptions:
    """How to load a model for one trial, the same for every method."""

    cache_dir: str = field(default_factory=default_cache_dir)
    device: str = "cpu"
    precision: str = "fp32"
    # None keeps the model's own value. 0 lets torch's fused SDPA kernel run in training:
    # dropout on the attention probabilities forces the materialised (bmm + softmax) path.
    attention_dropout: float | None = None
    gradient_checkpointing: bool = False


class MethodParams(BaseModel):
    """A method's parameters, their types, defaults and allowed values: one model per method,
    beside its code (as peft has LoraConfig and IA3Config). A YAML `method:` is checked against
    its method's model; a parameter it lacks is an error naming the ones it has."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    build: Callable[..., BuiltModel]
    params: type[MethodParams] = MethodParams
    # What trains, for the memory planner: every weight (all), the classifier head (head), or
    # adapters and the head (adapters); a method that does not train has `evaluate` instead
    trains_weights: str = "adapters"
    # For the memory planner (trial/memory.py): (adapter weights, values each adapted layer keeps
    # per token for the backward pass) of (params, modules by name, linear layout, adapted modules)
    adapter_size: Callable[..., tuple[int, float]] | None = None
    families: tuple[str, ...] = ("encoder", "decoder")
    description: str = ""
    needs_bitsandbytes: bool = False
    # How a method that trains part of the model holds the frozen rest on CUDA, for the memory
    # planner: in the trial's compute dtype (bf16/fp16: `body_dtype`), or in fp32 (head-only loads
    # it so; QLoRA's non-4-bit parts, which peft's k-bit preparation upcasts)
    frozen_in_fp32: bool = False
    # How a method that does not train classifies the test split:
    # evaluate(built, params, texts, label_names, max_length, batch_size, device) -> (n, classes)
    # probabilities. None: it trains, and the Trainer evaluates it.
    evaluate: Callable[..., Any] | None = None
    # The learning rates a sweep's equal-budget tuning searches (log-uniform) unless a variant
    # gives its own `tune.learning_rate`: each method's usual range, wide enough that a method
    # is not judged at a rate that suits another
    learning_rates: tuple[float, float] | None = None

    @property
    def trains(self) -> bool:
        return self.evaluate is None

    @property
    def rate_range(self) -> str:
        """The usual range as people write it: 1e-4 to 5e-3."""
        return " to ".join(map(format_rate, self.learning_rates))

    def rate_warning(self, learning_rate: float) -> str | None:
        """A rate outside the method's usual range, said aloud: the config's default 2e-5 suits
        full fine-tuning, and a LoRA trial at it barely trains (MiniLM-L6, 2,000 IMDb rows: test
        accuracy 0.585 against 0.7695 at 5e-4, 2026-12-06)."""
        if self.learning_rates is None or self.learning_rates[0] <= learning_rate <= self.learning_rates[1]:
            return None
        side = "below" if learning_rate < self.learning_rates[0] else "above"
        return (f"learning rate {format_rate(learning_rate)} is {side} {self.name}'s usual range "
                f"({self.rate_range}, what a sweep's tuning searches): it may barely train, or diverge")

    def takes(self, *params: str) -> bool:
        """Whether the method has all these parameters (a LoRA search needs r, alpha, dropout)."""
        return all(p in self.params.model_fields for p in params)


METHODS: Registry[MethodSpec] = Registry("method")


def format_rate(rate: float) -> str:
    """A learning rate as people write it: 5e-4, 2.5e-5."""
    import numpy as np

    return np.format_float_scientific(rate, trim="-", exp_digits=1)


def register_method(spec: MethodSpec) -> MethodSpec:
    return METHODS.register(spec.name, spec)


def get_method(name: str) -> MethodSpec:
    return METHODS.get(name)


def resolved_params(method: MethodConfig) -> dict[str, Any]:
    """The method's defaults updated by what the config set."""
    return get_method(method.name).params.model_validate(method.params()).model_dump()


def method_problems(method: MethodConfig) -> list[str]:
    """Each problem of the method's parameters, as `method.<field> = <value>: <what is allowed>`."""
    if method.name not in METHODS:
        return [METHODS.unknown(method.name, "method.name")]
    spec = METHODS[method.name]
    unknown = [f"method.{key} = {value!r}: not a parameter of method {spec.name!r}; it takes: "
               f"{', '.join(spec.params.model_fields) or 'no parameters'}"
               for key, value in method.params().items() if key not in spec.params.model_fields]
    if unknown:
        return unknown
    try:
        spec.params.model_validate(method.params())
    except ValidationError as err:
        return [f"method.{p}" for p in format_pydantic(err)]
    return []


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


# -- loading, the same for every method -------------------------------------------------------------------------

ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout")  # BERT-like, DistilBERT/Qwen


def loaded_config(model: ModelSpec, opts: LoadOptions, **overrides):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(materialize(model, opts.cache_dir), **overrides)
    if opts.attention_dropout is not None:
        for key in ATTENTION_DROPOUT_KEYS:
            if hasattr(config, key):
                setattr(config, key, opts.attention_dropout)
    return config


def load_classifier(model: ModelSpec, num_labels: int, opts: LoadOptions, **kwargs):
    """The model with a fresh classification head, in fp32 unless `dtype` says otherwise:
    transformers 5 otherwise loads a checkpoint in the dtype it was stored in (fp16 for some
    Hub repos), and full fine-tuning would then train without fp32 master weights."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = materialize(model, opts.cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(model.resolve_tokenizer())
    config = loaded_config(model, opts, num_labels=num_labels)
    kwargs.setdefault("dtype", torch.float32)
    net = AutoModelForSequenceClassification.from_pretrained(path, config=config, **kwargs)
    with_pad_token(tokenizer)
    if net.config.pad_token_id is None:  # sequence classification finds the last token by it
        net.config.pad_token_id = tokenizer.pad_token_id
    no_kv_cache(net)
    return net, tokenizer


def with_pad_token(tokenizer):
    """The tokenizer, padding with its end-of-text token where it has no pad token: decoders
    (Qwen3, GPT-style) often ship without one, and batches need one."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def no_kv_cache(net) -> None:
    """A decoder keeps every layer's keys and values for generating the next token (gigabytes for
    Qwen3-4B at batch 64 x 512); classifying, probing or scoring one next token never reuses them."""
    if hasattr(net.config, "use_cache"):
        net.config.use_cache = False


def quantized_queries_in_autocast_dtype(net) -> None:
    """DeBERTa-v2/v3 with 4-bit (or 8-bit) linears under CUDA autocast, found by
    benchmarks/gpu_check.py on an H100: transformers masks the attention scores with the minimum
    of the *query's* dtype (modeling_deberta_v2.py: `torch.finfo(query_layer.dtype).min`, still so
    in transformers 5.25; the fix proposed upstream, transformers PR 35336, is not in it). A
    quantized projection returns its input's dtype, fp32 (autocast runs layer_norm in fp32, and
    QLoRA keeps the norms in fp32), while the scores leave bmm in bf16 or fp16, and fp32's minimum
    (-3.40e38) overflows both (bf16's is -3.39e38, fp16's -65,504). A plain Linear under autocast
    returns the autocast dtype: each query projection does so here. Other architectures are left
    as they are (DeBERTa-v1 has the same line, but one fused in_proj for query, key and value)."""
    import torch

    if getattr(net.config, "model_type", None) != "deberta-v2":
        return

    def to_autocast_dtype(module, args, output):
        kind = output.device.type
        if torch.is_autocast_enabled(kind) and output.is_floating_point():
            return output.to(torch.get_autocast_dtype(kind))
        return output

    for name, module in net.named_modules():
        if name.endswith("query_proj"):  # under peft its wrapper, whose output is the query
            module.register_forward_hook(to_autocast_dtype)


def body_dtype(opts: LoadOptions):
    """Adapter methods may hold frozen weights in half precision on CUDA; fp32 elsewhere."""
    import torch

    if opts.device == "cuda" and opts.precision in ("bf16", "fp16"):
        return {"bf16": torch.bfloat16, "fp16": torch.float16}[opts.precision]
    return torch.float32


def build(method: MethodConfig, model: ModelSpec, num_labels: int, opts: LoadOptions) -> BuiltModel:
    check_compatible(method, model, opts.device)
    built = get_method(method.name).build(model, resolved_params(method), num_labels, opts)
    trainables_to_fp32(built.model)
    return built


def trainables_to_fp32(model) -> None:
    """Every trainable parameter in fp32, whatever the frozen body is held in: mixed precision
    computes in bf16/fp16 but keeps fp32 master weights (the optimizer's update of a bf16
    weight rounds most small steps away; the fp16 grad scaler refuses fp16 gradients). peft
    copies the classifier head in the body's dtype; adapters are created in fp32."""
    import torch

    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()
