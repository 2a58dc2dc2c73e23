"""Model and method registries: names, head/target split per family, unknown names."""

from __future__ import annotations

import pytest

from sentisweep.config import MethodConfig
from sentisweep.trial.methods import METHODS, IncompatibleMethodError, check_compatible, get_method
from sentisweep.trial.models import MODELS, UnknownNameError, get_model_spec, linear_layout, model_problems

pytestmark = pytest.mark.unit

REQUIRED_MODELS = ["distilbert-base-uncased", "bert-base-uncased", "roberta-base", "microsoft/deberta-v3-base",
                   "Qwen/Qwen3-0.6B", "Qwen/Qwen3-4B", "minilm-l6", "tiny-bert", "tiny-distilbert",
                   "tiny-roberta", "tiny-deberta", "tiny-qwen3"]

# (model, heads, one attention module, one ffn module) per family
LAYOUTS = [
    ("tiny-bert", ["pooler", "classifier"], "bert.encoder.layer.0.attention.self.query",
     "bert.encoder.layer.0.intermediate.dense"),
    ("tiny-roberta", ["classifier"], "roberta.encoder.layer.1.attention.output.dense",
     "roberta.encoder.layer.1.output.dense"),
    ("tiny-distilbert", ["pre_classifier", "classifier"], "distilbert.transformer.layer.0.attention.q_lin",
     "distilbert.transformer.layer.0.ffn.lin2"),
    ("tiny-deberta", ["pooler", "classifier"], "deberta.encoder.layer.0.attention.self.value_proj",
     "deberta.encoder.layer.0.output.dense"),
    ("tiny-qwen3", ["score"], "model.layers.0.self_attn.o_proj", "model.layers.1.mlp.down_proj"),
]


def test_required_entries_and_methods():
    assert set(REQUIRED_MODELS) <= set(MODELS)
    assert {"full", "head-only", "lora", "dora", "qlora", "ia3", "zero-shot"} <= set(METHODS)
    assert get_model_spec("Qwen/Qwen3-4B").family == "decoder"
    assert get_model_spec("microsoft/deberta-v3-base").family == "encoder"


def _classifier(name, cache_dir):
    from transformers import AutoModelForSequenceClassification

    from sentisweep.trial.models import materialize

    return AutoModelForSequenceClassification.from_pretrained(materialize(get_model_spec(name), cache_dir),
                                                              num_labels=2)


@pytest.mark.parametrize("name,heads,attention,ffn", LAYOUTS, ids=[row[0] for row in LAYOUTS])
def test_layout_per_family(name, heads, attention, ffn, cache_dir):
    model = _classifier(name, cache_dir)
    layout = linear_layout(model, model.config.model_type)
    assert layout.head_modules == heads
    assert attention in layout.attention and ffn in layout.ffn
    assert not set(layout.attention) & set(layout.ffn)
    body = layout.resolve("all-linear")
    assert not any(h in n.split(".") for n in body for h in heads)  # heads are never adapter targets
    # every body linear layer is attention or ffn: 4 attention + 2 ffn per layer (Qwen3: 4 + 3)
    assert len(body) == 2 * (7 if name == "tiny-qwen3" else 6)


def test_distilbert_all_linear_excludes_pre_classifier(cache_dir):
    model = _classifier("tiny-distilbert", cache_dir)
    targets = linear_layout(model, "distilbert").resolve("all-linear")
    assert "pre_classifier" not in targets and all("transformer.layer" in t for t in targets)


def test_unknown_architecture_falls_back_to_generic_rules(cache_dir):
    model = _classifier("tiny-qwen3", cache_dir)
    generic = linear_layout(model, "some-new-arch")
    explicit = linear_layout(model, "qwen3")
    assert generic.attention == explicit.attention and generic.ffn == explicit.ffn
    assert generic.head_modules == ["score"]  # inferred: outside the base model, has parameters


def test_placement_by_module_names(cache_dir):
    model = _classifier("tiny-bert", cache_dir)
    layout = linear_layout(model, "bert")
    chosen = layout.resolve(["query", "value"])
    assert len(chosen) == 4 and all(c.endswith((".query", ".value")) for c in chosen)
    with pytest.raises(ValueError, match="this model has: dense, key, query, value"):
        layout.resolve(["q_proj"])


def test_unknown_names_list_the_known_ones():
    with pytest.raises(UnknownNameError, match="known: dora, full"):
        get_method("nope")
    with pytest.raises(UnknownNameError, match="minilm-l6"):
        get_model_spec("nope")
    assert model_problems("org/any-model") == []


def test_incompatible_combinations_raise_a_typed_error():
    with pytest.raises(IncompatibleMethodError, match="needs a decoder model"):
        check_compatible(MethodConfig(name="zero-shot"), get_model_spec("tiny-roberta"), "cpu")
    with pytest.raises(IncompatibleMethodError, match="cannot quantize on 'mps'"):
        check_compatible(MethodConfig(name="qlora"), get_model_spec("tiny-bert"), "mps")


def test_qlora_needs_bitsandbytes(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "bitsandbytes" else real(name))
    with pytest.raises(IncompatibleMethodError, match="needs bitsandbytes"):
        check_compatible(MethodConfig(name="qlora"), get_model_spec("tiny-bert"), "cpu")


@pytest.mark.parametrize("name,key", [("tiny-bert", "attention_probs_dropout_prob"),
                                      ("tiny-distilbert", "attention_dropout")])
def test_attention_dropout_override(name, key, cache_dir):
    from sentisweep.trial.methods import LoadOptions, build

    full, spec = MethodConfig(name="full"), get_model_spec(name)
    keep = build(full, spec, 2, LoadOptions(str(cache_dir), attention_dropout=None))
    fused = build(full, spec, 2, LoadOptions(str(cache_dir), attention_dropout=0.0))
    assert getattr(keep.model.config, key) == 0.1  # the architecture's default
    assert getattr(fused.model.config, key) == 0.0


def test_gpu_precision_choice_is_guarded(monkeypatch):
    """The CUDA branch, checked without a GPU (mocked at torch's boundary): auto picks bf16 only
    on GPUs with bf16 units (compute capability 8+), not on a T4 or V100 that emulates it; a
    trial that needs CUDA and has none fails; a CPU trial stays on the CPU where CUDA is."""
    import torch

    from sentisweep.trial.device import inference_autocast, resolve_device_and_precision
    from sentisweep.trial.methods import LoadOptions
    from sentisweep.trial.methods.base import body_dtype

    assert resolve_device_and_precision("auto") == ("cpu", "fp32")
    with pytest.raises(IncompatibleMethodError, match="half precision is for CUDA"):
        resolve_device_and_precision("fp16")
    with pytest.raises(RuntimeError, match="given a GPU, but CUDA is not available"):
        resolve_device_and_precision("auto", device="cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # as a T4 says
    for capability, precision in (((7, 5), "fp16"), ((7, 0), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        assert resolve_device_and_precision("auto") == ("cuda", precision), capability
    assert resolve_device_and_precision("auto", device="cpu") == ("cpu", "fp32")  # a CPU trial on a GPU node
    assert body_dtype(LoadOptions(device="cuda", precision="bf16")) == torch.bfloat16
    assert body_dtype(LoadOptions(device="cpu", precision="fp32")) == torch.float32
    assert type(inference_autocast("cpu")).__name__ == "nullcontext"


@pytest.mark.parametrize("method, rate, side", [("lora", 2e-5, "below"), ("lora", 5e-4, None), ("ia3", 0.1, "above"),
                                               ("full", 2e-5, None), ("head-only", 2e-5, "below"),
                                               ("zero-shot", 2e-5, None)])
def test_a_rate_outside_the_methods_usual_range_is_said(method, rate, side):
    warning = get_method(method).rate_warning(rate)
    if side is None:
        assert warning is None
    else:
        assert f"is {side} {method}'s usual range ({get_method(method).rate_range}" in warning


def test_a_name_is_registered_once_and_a_typo_gets_a_suggestion():
    from sentisweep.registry import Registry

    registry = Registry("colour")
    registry.register("magenta", 1)
    with pytest.raises(ValueError, match="colour 'magenta' is registered already"):
        registry.register("magenta", 2)
    with pytest.raises(UnknownNameError, match=r"colour = 'magneta': unknown; did you mean 'magenta'\? known: magenta"):
        registry.get("magneta")
    assert "did you mean" not in registry.unknown("zzz")


def test_the_driver_fetches_each_hub_model_once_and_leaves_a_failed_fetch_to_the_trials(monkeypatch, capsys):
    """Issue 37: every trial downloaded its weights itself, the GPUs of trials started together
    idle on one download. The driver fetches each Hub repo once; local models need nothing."""
    import huggingface_hub

    from sentisweep.trial.models import PREFETCH_PATTERNS, prefetch

    fetched = []

    def snapshot_download(repo_id, allow_patterns):
        if repo_id == "Qwen/Qwen3-4B":
            raise OSError("gated repo: no access")
        fetched.append((repo_id, allow_patterns))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    specs = [get_model_spec(name) for name in
             ("distilbert-base-uncased", "distilbert-base-uncased", "Qwen/Qwen3-4B", "tiny-bert")]
    assert prefetch(specs) == ["distilbert-base-uncased"]
    assert fetched == [("distilbert-base-uncased", PREFETCH_PATTERNS)]
    assert "could not fetch Qwen/Qwen3-4B (OSError: gated repo: no access)" in capsys.readouterr().err


def test_a_search_tokenizes_and_fetches_its_model_once_before_its_trials(monkeypatch, tmp_path):
    """Issue 37: the search's trials, started together, each downloaded the same Hub weights (and
    each tokenized the same texts); its driver does both first, as the ablation's does (the fetch
    itself: the test above). After Ray is joined, so a cluster that can never run a trial is
    refused before the download, and while an autoscaler's node boots."""
    from pathlib import Path
    from types import SimpleNamespace

    from sentisweep.config_load import load_config
    from sentisweep.storage import Store
    from sweeps import driver, search

    calls = []
    monkeypatch.setattr(search, "prefetch", lambda specs: calls.append(("prefetch", [s.name for s in specs])))
    monkeypatch.setattr(driver, "pretokenize", lambda configs: calls.append(
        ("pretokenize", [(c.model, c.method.name, c.training.max_length) for c in configs])))

    def start_ray(*args, **kwargs):
        calls.append(("start_ray",))

        def wait_for_room():
            calls.append(("wait_for_room",))
            raise RuntimeError("no Ray in this test")
        return wait_for_room

    monkeypatch.setattr(driver, "start_ray", start_ray)
    config = load_config(Path(__file__).parents[1] / "sweeps" / "configs" / "search_smoke.yaml", "search",
                         {"model": "distilbert-base-uncased"})
    args = SimpleNamespace(study_storage=None, resume=False, mlflow_uri=None)
    with pytest.raises(RuntimeError, match="no Ray in this test"):
        search.run(args, config, Store(str(tmp_path)))
    assert calls == [("start_ray",), ("pretokenize", [("distilbert-base-uncased", "lora", config.training.max_length)]),
                     ("prefetch", ["distilbert-base-uncased"]), ("wait_for_room",)]


def test_a_sweep_no_node_could_ever_run_is_refused_before_tokenizing(monkeypatch, tmp_path):
    """A GPU sweep on a cluster of CPU nodes with no autoscaler once tokenized all of IMDb and
    fetched each model's weights (Qwen3-4B: 8 GB) before saying that no trial could ever start."""
    from pathlib import Path

    from sentisweep.config_load import load_config
    from sentisweep.exit_codes import BadInput
    from sentisweep.plan import expand
    from sentisweep.storage import Store
    from sweeps import ablation, driver

    calls = []
    monkeypatch.setattr(driver, "pretokenize", lambda configs: calls.append("pretokenize"))
    monkeypatch.setattr(ablation, "prefetch", lambda specs: calls.append("prefetch"))

    def start_ray(*args, **kwargs):
        calls.append("start_ray")
        raise BadInput("no node of this cluster has that")

    monkeypatch.setattr(driver, "start_ray", start_ray)
    sweep = load_config(Path(__file__).parents[1] / "sweeps" / "configs" / "smoke.yaml", "sweep")
    planned = expand(sweep, Store(str(tmp_path)), "cpu")
    with pytest.raises(BadInput, match="no node"):
        ablation.run_sweep(None, sweep, Store(str(tmp_path)), planned, finished=set())
    assert calls == ["start_ray"]


@pytest.mark.parametrize("method, frozen_in_fp32", [("head-only", True), ("qlora", True), ("lora", False)])
def test_the_planner_holds_the_frozen_body_as_the_method_does(method, frozen_in_fp32):
    """Issue 37: on CUDA the planner put every frozen body in the compute dtype, but head-only
    loads it in fp32 and QLoRA's non-4-bit parts are upcast to fp32 by peft. The row's estimate
    is the allocator's peak, like peak_memory_bytes (max_memory_allocated has no CUDA context)."""
    from sentisweep.config_load import parse_trial_config
    from sentisweep.trial.memory import CUDA_CONTEXT_BYTES, estimate_trial_memory

    config = parse_trial_config({"model": "tiny-qwen3", "method": method})
    on_gpu, on_cpu = estimate_trial_memory(config, "cuda", "bf16"), estimate_trial_memory(config, "cpu", "fp32")
    assert (on_gpu.weights == on_cpu.weights) == frozen_in_fp32
    assert on_gpu.total - on_gpu.allocated == CUDA_CONTEXT_BYTES and on_cpu.total == on_cpu.allocated


def test_the_planner_counts_debertas_unfused_attention():
    """Issue 37: DeBERTa's attention is not fused, and keeps about 4 values per head and pair of
    positions per layer; tiny-deberta at 512 tokens measured 340 MiB against 76 estimated without
    it. tiny-bert has the same shapes and a fused attention: the difference is that term alone."""
    from sentisweep.config_load import parse_trial_config
    from sentisweep.trial.memory import estimate_trial_memory

    training = {"batch_size": 16, "eval_batch_size": 16, "max_length": 512}
    bert, deberta = (estimate_trial_memory(parse_trial_config({"model": m, "method": "full", "training": training}),
                                           "cpu", "fp32") for m in ("tiny-bert", "tiny-deberta"))
    layers, heads = 2, 2
    assert deberta.activations - bert.activations == 16 * 512 * layers * 4 * heads * 512 * 4


def test_mixed_precision_counts_what_autocast_keeps_in_a_bert_like_layer():
    """Issue 37: on CUDA in bf16, autocast keeps a half-precision copy of every fp32 weight it
    multiplies with until the backward pass; adapters on a bf16 body have no such copies. And an
    H100 showed a BERT-like layer keeps 10h bytes a token more than every value in half precision
    (fp32 layer norms, a copy of their output per projection, SDPA's output): full and adapters."""
    from sentisweep.config_load import parse_trial_config
    from sentisweep.trial.memory import estimate_trial_memory
    from sentisweep.trial.models import hub_config

    training = {"eval_batch_size": 16}  # training's peak, not evaluation's (64 x 1 layer against 16 x 2)

    def activations(method: str, precision: str) -> int:
        config = parse_trial_config({"model": "tiny-bert", "method": method, "training": training})
        return estimate_trial_memory(config, "cuda", precision).activations

    config = parse_trial_config({"model": "tiny-bert", "method": "full", "training": training})
    model = hub_config("tiny-bert")
    total = estimate_trial_memory(config, "cuda", "fp32").weights // 4
    tokens = config.training.batch_size * config.training.max_length
    autocast = tokens * model.num_hidden_layers * 10 * model.hidden_size
    assert activations("full", "bf16") - activations("full", "fp32") // 2 == total * 2 + autocast
    assert activations("lora", "bf16") - activations("lora", "fp32") // 2 == autocast


@pytest.mark.parametrize("checkpointing", [False, True])
def test_under_qlora_a_qwen3_layer_keeps_its_stream_and_mlp_in_fp32(checkpointing):
    """An H100 measured Qwen3-4B QLoRA at 33,933 MiB against 26,065 planned: a 4-bit linear returns
    its input's dtype, fp32 under QLoRA (peft keeps the embeddings and norms in fp32), so the gated
    MLP's gate, SiLU and up projection keep 4 bytes each where LoRA on a bf16 body keeps 2, and
    gradient checkpointing keeps each layer's input in fp32."""
    from sentisweep.config_load import parse_trial_config
    from sentisweep.trial.memory import estimate_trial_memory
    from sentisweep.trial.models import hub_config

    training = {"eval_batch_size": 16, "gradient_checkpointing": checkpointing}
    lora, qlora = (estimate_trial_memory(parse_trial_config({"model": "tiny-qwen3", "method": method,
                                                             "training": training}), "cuda", "bf16").activations
                   for method in ("lora", "qlora"))
    model, tokens = hub_config("tiny-qwen3"), 16 * 256
    if checkpointing:  # one layer's worth, and each layer's input
        assert qlora - lora == tokens * (3 * model.intermediate_size + model.num_hidden_layers * model.hidden_size) * 2
    else:
        assert qlora - lora == tokens * model.num_hidden_layers * 3 * model.intermediate_size * 2


def _saved_bytes_per_token_layer(config, frozen: bool = False) -> float:
    """What autograd saves for the backward pass of one fp32 training forward, per token and layer
    (2 layers against 4, so embeddings and head cancel), parameters not counted. `frozen`: no weight
    is trained, and the gradient flows back to the input embeddings (as through adapters)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    saved = []
    for layers in (2, 4):
        settings = {**config.to_dict(), "num_hidden_layers": layers}
        settings.pop("layer_types", None)
        model = AutoModelForSequenceClassification.from_config(type(config)(**settings), attn_implementation="sdpa")
        params = {p.data_ptr() for p in model.requires_grad_(not frozen).parameters()}
        storages = {}

        def pack(tensor, params=params, storages=storages):
            if tensor.data_ptr() not in params:
                storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
            return tensor

        ids = torch.randint(5, 500, (2, 64))
        inputs = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model.train()(inputs_embeds=inputs, attention_mask=torch.ones_like(ids))
        saved.append(sum(storages.values()))
    return (saved[1] - saved[0]) / 2 / ids.numel()


def test_the_planner_counts_what_a_qwen3_layer_keeps():
    """Issue 37: a Qwen3 layer keeps about twice BERT's 9h + 2i per token (an attention wider than
    its hidden size, four RMSNorms, a gated MLP). The planner's term against what autograd saves
    for a Qwen3-shaped layer (attention twice the hidden size, as Qwen3-0.6B's), and in bf16 the
    norms' inputs stay fp32."""
    import transformers

    from sentisweep.trial.memory import gated_decoder_layer_bytes

    shape = dict(hidden_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=64, intermediate_size=384)
    config = transformers.Qwen3Config(vocab_size=500, pad_token_id=0, **shape)
    planned = gated_decoder_layer_bytes(config, 128, 384, 4, 4)
    measured = _saved_bytes_per_token_layer(config)
    assert 0.9 <= planned / measured <= 1.1, (planned, measured)
    # a frozen body keeps less (measured 2,572 values a token, planned 2,816)
    frozen = gated_decoder_layer_bytes(config, 128, 384, 4, 4, frozen=True)
    assert 1.0 <= frozen / _saved_bytes_per_token_layer(config, frozen=True) <= 1.15 and frozen < 0.75 * planned
    assert planned > 1.5 * (9 * 128 + 2 * 384) * 4  # BERT's term would miss half
    norms = 2 * 128 + 4 * 64 + 2 * 64
    assert gated_decoder_layer_bytes(config, 128, 384, 4, 2) == planned - (norms + 4 * 4 * 64 + 4 * 384) * 2


def test_a_head_only_trial_keeps_no_activations_of_its_frozen_body():
    """The backward pass of a trained head never reaches the frozen body, so nothing of the body is
    kept for it: the planner holds one layer's worth, as evaluation does (benchmarks/real_shaped.py
    measured tiny-qwen3 head-only at 10 MiB of tensors against 34 estimated before)."""
    from sentisweep.config_load import parse_trial_config
    from sentisweep.trial.memory import activation_bytes, estimate_trial_memory
    from sentisweep.trial.models import hub_config

    def estimate(method):
        config = parse_trial_config({"model": "tiny-bert", "method": method, "output_dir": "unused",
                                     "training": {"batch_size": 16, "eval_batch_size": 16, "max_length": 256}})
        return config, estimate_trial_memory(config, "cpu", "fp32")

    config, head = estimate("head-only")
    _, full = estimate("full")
    assert head.activations == activation_bytes(hub_config("tiny-bert"), config.training, 4, 0, trains=False)
    assert head.activations * 2 <= full.activations  # 2 layers kept against one at a time
