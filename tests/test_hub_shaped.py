"""Model folders laid out as the Hub repos the registry names are (tokenizer files included),
loaded through the registry's own code paths for every method that applies: what a user's
first run on a GPU cluster meets, checked here on CPU (benchmarks/hub_shaped.py)."""

from __future__ import annotations

import importlib.util

import pytest
from helpers import synthetic_reviews, tiny_trial
from hub_shaped import FAMILIES, build_folders

from sentisweep.config_load import parse_trial_config
from sentisweep.trial.models import get_model_spec
from sentisweep.trial.run import run_trial

pytestmark = pytest.mark.integration
METHODS = ["full", "head-only", {"name": "lora", "r": 4}, "ia3", {"name": "qlora", "r": 4}]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    texts = synthetic_reviews(400, seed=9)["text"].tolist()
    return build_folders(tmp_path_factory.mktemp("hub"), texts)


def test_each_folder_has_its_hub_repos_tokenizer_files(folders):
    expected = {"bert": {"vocab.txt"}, "distilbert": {"vocab.txt"}, "roberta": {"vocab.json", "merges.txt"},
                "deberta-v3": {"spm.model"}, "qwen3": {"tokenizer.json"}}
    for family, folder in folders.items():
        names = {p.name for p in folder.iterdir()}
        assert expected[family] <= names, family
        assert family != "deberta-v3" or "tokenizer.json" not in names  # as microsoft/deberta-v3-base


@pytest.mark.parametrize("family", FAMILIES)
def test_tail_truncation_frames_the_end_with_each_familys_special_tokens(family, folders):
    from transformers import AutoTokenizer

    from sentisweep.trial.tokenization import encode

    tokenizer = AutoTokenizer.from_pretrained(str(folders[family]))
    text = " ".join(synthetic_reviews(40, seed=3)["text"])  # far longer than 24 tokens
    body = tokenizer(text, add_special_tokens=False)["input_ids"]
    (head,) = encode([text], tokenizer, 24, "head")
    (tail,) = encode([text], tokenizer, 24, "tail")
    framed = tokenizer(text, truncation=True, max_length=24)["input_ids"]
    assert head == framed and len(tail) == 24
    special = set(tokenizer.all_special_ids)
    kept = [t for t in tail if t not in special]
    assert kept == body[-len(kept):]  # the end of the text
    assert [t for t in tail if t in special] == [t for t in head if t in special]  # framed as the head is


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m if isinstance(m, str) else m["name"])
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_trains_with_every_method(family, method, folders, data_dir, cache_dir, tmp_path):
    name = method if isinstance(method, str) else method["name"]
    if name == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
        pytest.skip("bitsandbytes is not installed")
    folder = str(folders[family])
    assert get_model_spec(folder).family == ("decoder" if family == "qwen3" else "encoder")
    result = run_trial(parse_trial_config(tiny_trial(folder, method, data_dir, cache_dir, tmp_path / "t")))
    assert result.status == "ok", result.error
    assert result.trainable_params > 0 and 0 <= result.accuracy <= 1


def test_zero_shot_on_the_decoder(folders, data_dir, cache_dir, tmp_path):
    result = run_trial(parse_trial_config(tiny_trial(str(folders["qwen3"]), "zero-shot", data_dir, cache_dir,
                                                     tmp_path / "t")))
    assert result.status == "ok", result.error


@pytest.fixture(scope="module")
def half_folders(tmp_path_factory):
    """Checkpoints stored in half precision, as some Hub repos are (transformers 5 loads a
    checkpoint in its stored dtype unless told otherwise)."""
    texts = synthetic_reviews(400, seed=9)["text"].tolist()
    root = tmp_path_factory.mktemp("hub-half")
    return {**build_folders(root, texts, "float16", ["deberta-v3"]), "qwen3": build_folders(
        root, texts, "bfloat16", ["qwen3"])["qwen3"]}


@pytest.mark.parametrize("method", ["full", "head-only", "lora", "dora", "ia3", "qlora"])
@pytest.mark.parametrize("family", ["deberta-v3", "qwen3"])
def test_every_trainable_parameter_is_fp32_whatever_the_checkpoint_stores(family, method, half_folders,
                                                                         cache_dir):
    import torch

    from sentisweep.trial.methods import LoadOptions, build

    if method == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
        pytest.skip("bitsandbytes is not installed")
    config = parse_trial_config({"model": str(half_folders[family]), "method": method})
    built = build(config.method, get_model_spec(config.model), 2, LoadOptions(str(cache_dir)))
    trainable = {name: p.dtype for name, p in built.model.named_parameters() if p.requires_grad}
    assert trainable and set(trainable.values()) == {torch.float32}, trainable
    if method in ("full", "head-only"):  # no adapter: the whole model in fp32 on CPU
        assert {p.dtype for p in built.model.parameters()} == {torch.float32}


@pytest.mark.parametrize("method", ["lora", "dora", "ia3"])
def test_adapters_over_a_half_precision_body_train_in_fp32(method, half_folders, cache_dir):
    """On a GPU with bf16, adapter methods hold the frozen body in bf16; the adapters and the
    classifier head (which peft copies to train) must still be fp32 master weights. Built here
    as for CUDA (nothing in `build` moves to the device)."""
    import torch

    from sentisweep.trial.methods import LoadOptions, build

    config = parse_trial_config({"model": str(half_folders["deberta-v3"]), "method": method})
    built = build(config.method, get_model_spec(config.model), 2,
                  LoadOptions(str(cache_dir), device="cuda", precision="bf16"))
    trainable = {name: p.dtype for name, p in built.model.named_parameters() if p.requires_grad}
    assert set(trainable.values()) == {torch.float32}, trainable
    frozen = {p.dtype for p in built.model.parameters() if not p.requires_grad}
    assert frozen == {torch.bfloat16}  # the body stays in half precision: that is the memory saving


@pytest.mark.parametrize("half", ["bfloat16", "float16"])
def test_qlora_on_deberta_v3_trains_under_half_precision_autocast(half, folders, cache_dir):
    """On a GPU QLoRA computes under bf16/fp16 autocast. DeBERTa-v3 failed there (gpu_check on an
    H100: "value cannot be converted to type c10::BFloat16 without overflow"), and CPU autocast
    takes the same path: a forward and a backward pass, as the Trainer runs them."""
    import torch

    from sentisweep.trial.methods import LoadOptions, build

    if importlib.util.find_spec("bitsandbytes") is None:
        pytest.skip("bitsandbytes is not installed")
    config = parse_trial_config({"model": str(folders["deberta-v3"]),
                                 "method": {"name": "qlora", "r": 4, "compute_dtype": half}})
    built = build(config.method, get_model_spec(config.model), 2, LoadOptions(str(cache_dir)))
    batch = built.tokenizer(["a fine film", "the plot was dull and far too long"], padding=True, return_tensors="pt")
    with torch.autocast("cpu", dtype=getattr(torch, half)):
        loss = built.model(**batch, labels=torch.tensor([1, 0])).loss
    loss.backward()
    assert torch.isfinite(loss)


def test_an_adapter_on_a_half_precision_base_loads_back_merged_in_fp32(half_folders, cache_dir, tmp_path):
    """Predict, export and the embedder load a trial's checkpoint one way (load_checkpoint): a
    base stored in fp16 would otherwise take the adapter merged in half precision (issue 37)."""
    import torch

    from sentisweep.trial.checkpoint import load_checkpoint
    from sentisweep.trial.methods import LoadOptions, build

    config = parse_trial_config({"model": str(half_folders["deberta-v3"]), "method": "lora"})
    spec = get_model_spec(config.model)
    built = build(config.method, spec, 2, LoadOptions(str(cache_dir)))
    built.model.save_pretrained(str(tmp_path / "adapter"))
    built.tokenizer.save_pretrained(str(tmp_path / "adapter"))
    model, _ = load_checkpoint(tmp_path / "adapter", str(cache_dir), ["neg", "pos"], base=spec)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert not any("lora" in name for name, _ in model.named_parameters())  # merged into the weights


def test_an_adapter_loads_back_with_its_trained_head_and_no_false_alarm(folders, cache_dir, tmp_path):
    """The base under an adapter loads with a fresh head, which the adapter replaces: the loaded
    model answers as the trained one did, and transformers' "MISSING: newly initialized" report
    on the fresh head is not shown (the demo printed it for every LoRA trial)."""
    import logging.handlers

    import torch
    from transformers.utils import logging as hf_logging

    from sentisweep.trial.checkpoint import load_checkpoint
    from sentisweep.trial.methods import LoadOptions, build

    config = parse_trial_config({"model": str(folders["distilbert"]), "method": "lora"})
    spec = get_model_spec(config.model)
    built = build(config.method, spec, 2, LoadOptions(str(cache_dir)))
    with torch.no_grad():  # a head unlike any fresh one
        built.model.base_model.model.classifier.modules_to_save["default"].weight.fill_(0.5)
    built.model.save_pretrained(str(tmp_path / "adapter"))
    built.tokenizer.save_pretrained(str(tmp_path / "adapter"))
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()  # as an interactive command starts; an earlier test may have quieted it
    shown = logging.handlers.BufferingHandler(capacity=1000)
    hf_logging.add_handler(shown)  # transformers' own handler writes to the stderr of its first use
    try:
        model, tokenizer = load_checkpoint(tmp_path / "adapter", str(cache_dir), ["neg", "pos"], base=spec)
    finally:
        hf_logging.remove_handler(shown)
        hf_logging.set_verbosity(level)
    assert not [r for r in shown.buffer if "MISSING" in r.getMessage()]
    batch = tokenizer(["a fine film", "the plot was dull"], padding=True, return_tensors="pt")
    built.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, built.model(**batch).logits, atol=1e-5, rtol=1e-5)


def test_zero_shot_scores_only_the_last_position_in_the_chat_template(folders, cache_dir):
    """The output layer sees one position per text (not the whole vocabulary at every position),
    the probabilities equal the full computation's, the chat model's template frames the prompt,
    and no key-value cache is kept."""
    import numpy as np
    import torch

    from sentisweep.trial.methods import LoadOptions, build, resolved_params
    from sentisweep.trial.methods.zero_shot import encode_prompts, evaluate_zero_shot

    config = parse_trial_config({"model": str(folders["qwen3"]), "method": "zero-shot"})
    built = build(config.method, get_model_spec(config.model), 2, LoadOptions(str(cache_dir)))
    params = resolved_params(config.method)
    texts = synthetic_reviews(6, seed=3)["text"].tolist()
    assert built.model.config.use_cache is False
    encoded, word_ids = encode_prompts(built.tokenizer, params, texts, 64)
    assert "<|im_start|>assistant" in built.tokenizer.decode(encoded[0])
    shapes = []
    built.model.get_output_embeddings().register_forward_hook(lambda m, args, out: shapes.append(args[0].shape))
    probabilities = evaluate_zero_shot(built, params, texts, ["negative", "positive"], 64, 4, "cpu")
    assert shapes and all(len(shape) == 2 for shape in shapes)  # (rows, hidden): the last position only
    with torch.inference_mode():  # the whole-sequence way, text by text
        full = [torch.softmax(built.model(torch.tensor([ids])).logits[0, -1, word_ids], -1).numpy() for ids in encoded]
    np.testing.assert_allclose(probabilities, np.stack(full), atol=1e-5)


def test_qlora_counts_its_packed_weights_in_full(data_dir, cache_dir, tmp_path):
    """A 4-bit weight is stored two to a byte; the total counts the weights, not the bytes."""
    if importlib.util.find_spec("bitsandbytes") is None:
        pytest.skip("bitsandbytes is not installed")
    rows = {name: run_trial(parse_trial_config(tiny_trial("tiny-bert", {"name": name, "r": 4}, data_dir, cache_dir,
                                                          tmp_path / name))) for name in ("lora", "qlora")}
    assert rows["qlora"].status == "ok", rows["qlora"].error
    assert rows["qlora"].total_params == rows["lora"].total_params
    assert rows["qlora"].trainable_params == rows["lora"].trainable_params


def test_gradient_checkpointing_is_an_option_for_every_method(data_dir, cache_dir, tmp_path):
    """Off unless asked, QLoRA included (it was always on for QLoRA on CUDA, so a QLoRA-vs-LoRA
    cost comparison measured checkpointing, not 4 bits), and recorded in the row."""
    if importlib.util.find_spec("bitsandbytes") is not None:
        qlora = run_trial(parse_trial_config(tiny_trial("tiny-bert", {"name": "qlora", "r": 4}, data_dir, cache_dir,
                                                        tmp_path / "qlora")))
        assert qlora.status == "ok" and qlora.gradient_checkpointing == 0, qlora.error
    for method in ("full", "lora"):
        result = run_trial(parse_trial_config(tiny_trial("tiny-bert", method, data_dir, cache_dir, tmp_path / method,
                                                         gradient_checkpointing=True)))
        assert result.status == "ok" and result.gradient_checkpointing == 1, result.error
    plain = run_trial(parse_trial_config(tiny_trial("tiny-bert", "lora", data_dir, cache_dir, tmp_path / "plain")))
    assert plain.gradient_checkpointing == 0


@pytest.mark.parametrize("name", ["distilbert_vs_qwen3.yaml", "imdb_peft_ablation.yaml", "roberta_methods.yaml"])
def test_every_trial_of_the_shipped_gpu_configs_builds(name, folders, cache_dir, tmp_path):
    """Each GPU study's model x method, built on CPU with the Hub-shaped folder of the same
    family standing in for the hub id (its placements must exist in that architecture)."""
    from pathlib import Path

    from hub_shaped import HUB_IDS

    from sentisweep.config_load import load_config
    from sentisweep.plan import expand
    from sentisweep.storage import Store
    from sentisweep.trial.methods import LoadOptions, build

    root = Path(__file__).resolve().parents[1]
    sweep = load_config(root / "sweeps" / "configs" / name, "sweep")
    built = set()
    for trial in expand(sweep, Store(str(tmp_path)), "cpu"):
        key = (trial.config.model, trial.config.method.model_dump_json())
        if trial.skip_reason or key in built or (trial.config.method.name == "qlora"
                                                 and importlib.util.find_spec("bitsandbytes") is None):
            continue
        stand_in = str(folders[HUB_IDS[trial.config.model]])
        model = build(trial.config.method, get_model_spec(stand_in), 2, LoadOptions(str(cache_dir)))
        assert any(p.requires_grad for p in model.model.parameters()) or trial.config.method.name == "zero-shot"
        built.add(key)
    assert built


def test_the_embedder_keeps_no_kv_cache(folders, cache_dir):
    from sentisweep.probe.embeddings import Embedder

    embedder = Embedder(str(folders["qwen3"]), max_length=32, cache_dir=str(cache_dir))
    assert embedder.model.config.use_cache is False
    assert embedder.embed(["a fine film", "a dull one"]).shape == (2, embedder.dim)


def test_a_4bit_deberta_v3_embedder_runs_under_cuda_autocast(folders, cache_dir, monkeypatch):
    """On CUDA a 4-bit embedder runs under bf16 autocast, which computes layer_norm in fp32, so
    DeBERTa-v3's 4-bit query projections return fp32 and its attention mask overflowed bf16 (as
    QLoRA did on an H100). CPU autocast leaves layer_norm in its input's dtype: CUDA's rule is
    imitated here, the one difference that matters to this path."""
    import torch

    from sentisweep.probe.embeddings import load_backbone

    if importlib.util.find_spec("bitsandbytes") is None:
        pytest.skip("bitsandbytes is not installed")
    layer_norm = torch.nn.functional.layer_norm

    def layer_norm_in_fp32(x, shape, weight=None, bias=None, eps=1e-5):
        with torch.autocast("cpu", enabled=False):
            return layer_norm(x.float(), shape, None if weight is None else weight.float(),
                              None if bias is None else bias.float(), eps)

    monkeypatch.setattr(torch.nn.functional, "layer_norm", layer_norm_in_fp32)
    model, tokenizer = load_backbone(get_model_spec(str(folders["deberta-v3"])), None, str(cache_dir), "cpu", "4bit")
    batch = tokenizer(["a fine film", "the plot was dull and far too long"], padding=True, return_tensors="pt")
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = model(**batch).last_hidden_state
    assert torch.isfinite(hidden.float()).all()


def test_the_embedder_computes_in_fp32_on_cpu_whatever_dtype_the_weights_were_saved_in(folders, cache_dir,
                                                                                          tmp_path):
    """Qwen3's Hub weights are bf16, and transformers loads them as saved: on these CPUs (no bf16
    units) that ran 2.5-4x slower, and on a T4 bf16 is emulated (issue 37: dtypes said, not inherited)."""
    import shutil

    import torch
    from transformers import AutoModel

    from sentisweep.probe.embeddings import Embedder

    saved_bf16 = tmp_path / "qwen3-bf16"
    shutil.copytree(folders["qwen3"], saved_bf16)
    AutoModel.from_pretrained(str(saved_bf16), dtype=torch.bfloat16).save_pretrained(str(saved_bf16))
    assert AutoModel.from_pretrained(str(saved_bf16)).dtype == torch.bfloat16  # what loading as saved gives
    embedder = Embedder(str(saved_bf16), max_length=32, cache_dir=str(cache_dir))
    assert embedder.model.dtype == torch.float32
    assert embedder.embed(["a fine film"]).dtype == "float32"
