"""Real-shaped models with random weights, for the GPU check (gpu_check.py): each built from the
registry's architecture settings (sentisweep/trial/models.py: hidden size, layers, heads, the
whole vocabulary), saved in its Hub repo's layout with a small tokenizer of its family
(hub_shaped.py), then trained for a few dozen steps of batch 16 x 256 tokens on a task it can
learn. Each trial runs in its own Python process, so no peak carries over to the next.

What a case reports, and how the check judges it:
    memory   the measured peak against the planner's estimate, like for like: on CUDA torch's
             max_memory_allocated against MemoryEstimate.allocated (no CUDA context in either);
             on CPU the peak of live tensor bytes (torch.profiler's memory events, as
             memory_estimate.py measures). Within 15% of the measured peak is a PASS.
    loss     the mean training loss of the last third of the logged steps below 90% of the
             first third's: the model learns the task (7 words in 10 are sentiment words, which
             decide the label).
    speed    training tokens per second (reported, not judged: the first run sets the figure).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

WORDS = {1: ["great", "wonderful", "moving", "superb", "loved"], 0: ["awful", "boring", "dull", "terrible", "hated"]}
FILLER = ["the", "film", "plot", "actors", "story", "scene", "was", "and", "a", "movie", "ending", "music"]
MEMORY_TOLERANCE = 0.15  # |estimate - measured| / measured
LOSS_FALL = 0.9  # the last third's mean loss below 90% of the first third's
BATCH, MAX_LENGTH = 16, 256
# transformers' model_type -> the hub_shaped family whose tokenizer files the Hub repo ships
TOKENIZER_FAMILY = {"bert": "bert", "distilbert": "distilbert", "roberta": "roberta", "deberta-v2": "deberta-v3",
                    "qwen3": "qwen3"}
# the special tokens' ids in hub_shaped's tokenizers (what the family's config must agree with)
SPECIAL_IDS = {"roberta": dict(pad_token_id=1, bos_token_id=0, eos_token_id=2),
               "qwen3": dict(pad_token_id=0, bos_token_id=None, eos_token_id=2)}


@dataclass(frozen=True)
class Case:
    model: str  # a registry name with an architecture (or a tiny config)
    method: str
    checkpointing: bool = False

    @property
    def label(self) -> str:
        return f"{self.model} {self.method}" + (" +checkpointing" if self.checkpointing else "")

    @property
    def slug(self) -> str:
        """The label as a file name: the trial's folder and the case's record."""
        return self.label.replace("/", "--").replace(" ", "-")

    @classmethod
    def parse(cls, text: str) -> Case:
        """`model:method` or `model:method:checkpointing`."""
        model, method, *rest = text.split(":")
        if rest not in ([], ["checkpointing"]):
            raise ValueError(f"--real-shaped case {text!r}: write model:method or model:method:checkpointing")
        return cls(model, method, bool(rest))


# the list (37): the encoders a CPU or T4 user fine-tunes whole, Qwen3-0.6B with LoRA, and
# Qwen3-4B's QLoRA with and without gradient checkpointing (distilbert_vs_qwen3.yaml's trial).
# Then three the planner's CUDA terms were not fitted to (the H100 run of 2026-12-05 fitted them
# to the first six): DeBERTa-v3 QLoRA (the ablation's trial that failed on that run), LoRA on a
# BERT-like bf16 body, QLoRA on a smaller Qwen3.
CUDA_CASES = (Case("distilbert-base-uncased", "full"), Case("roberta-base", "full"),
              Case("microsoft/deberta-v3-base", "full"), Case("Qwen/Qwen3-0.6B", "lora"),
              Case("Qwen/Qwen3-4B", "qlora", checkpointing=True), Case("Qwen/Qwen3-4B", "qlora"),
              Case("microsoft/deberta-v3-base", "qlora"), Case("roberta-base", "lora"),
              Case("Qwen/Qwen3-0.6B", "qlora"))


def long_reviews(n: int, seed: int, words: int = 320):
    """Rows of `words` words (more than 256 tokens in every family's tokenizer, so no padding),
    7 in 10 of them sentiment words of the row's label."""
    import pandas as pd

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        text = " ".join(rng.choice(WORDS[label]) if rng.random() < 0.7 else rng.choice(FILLER) for _ in range(words))
        rows.append({"text": text, "label": label})
    return pd.DataFrame(rows)


def write_data(folder: Path, steps: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "train.parquet").is_file():
        long_reviews(steps * BATCH + 32, 1).to_parquet(folder / "train.parquet")
        long_reviews(64, 2).to_parquet(folder / "test.parquet")
    return folder


def build_model_folder(model: str, root: Path, texts: list[str], device: str) -> Path:
    """The registry model's architecture with random weights, in its Hub repo's layout: decoders
    saved in bf16 (as Qwen3's repos), encoders in fp32. Built once under `root`."""
    import torch
    import transformers
    from hub_shaped import TOKENIZERS

    from sentisweep.trial.models import get_model_spec, hub_config

    folder = root / model.replace("/", "--")
    if (folder / "config.json").is_file():
        return folder
    config = hub_config(model)
    if config is None:
        raise ValueError(f"{model}: the registry holds no architecture for it")
    folder.mkdir(parents=True, exist_ok=True)
    TOKENIZERS[TOKENIZER_FAMILY[config.model_type]](folder, texts)  # its family's files; ids < its vocabulary
    for key, value in SPECIAL_IDS.get(config.model_type, {"pad_token_id": 0}).items():
        setattr(config, key, value)
    decoder = get_model_spec(model).family == "decoder"
    torch.manual_seed(0)
    # made in its stored dtype, on the GPU: Qwen3-4B's 4.0B weights initialise in seconds there, in
    # 8 GB (bf16) rather than 16 (fp32)
    with torch.device(device):
        built = (transformers.AutoModelForCausalLM if decoder else transformers.AutoModel).from_config(
            config, dtype=torch.bfloat16 if decoder else torch.float32)
    built.save_pretrained(folder)
    del built
    if device == "cuda":
        torch.cuda.empty_cache()
    return folder


def trial_config(case: Case, folder: Path, data: Path, work: Path, device: str, steps: int):
    from sentisweep.config_load import parse_trial_config

    return parse_trial_config({
        "model": str(folder), "method": case.method, "seed": 1, "output_dir": str(work / "trials" / case.slug),
        "data": {"source": str(data), "train_size": steps * BATCH, "eval_size": 32, "test_size": 64,
                 "cache_dir": str(work / "cache")},
        "training": {"max_steps": steps, "batch_size": BATCH, "eval_batch_size": BATCH, "max_length": MAX_LENGTH,
                     # a constant rate that a random-weight model learns the task with in a few dozen steps
                     "learning_rate": 5e-4 if case.method == "full" else 2e-3, "lr_scheduler": "constant",
                     "logging_steps": 2,
                     "gradient_checkpointing": case.checkpointing, "keep_checkpoint": False,
                     "precision": "auto", "device": device}})


def run_case_here(case: Case, device: str, steps: int, work: Path) -> dict:
    """One case in this process: its row, its logged losses and (CPU) the tensors' peak."""
    from sentisweep.trial.run import run_trial

    data = write_data(work / "real-data", steps)
    texts = long_reviews(200, 3)["text"].tolist()
    start = time.perf_counter()
    folder = build_model_folder(case.model, work / "real-models", texts, device)
    built_seconds = time.perf_counter() - start
    config = trial_config(case, folder, data, work, device, steps)
    if device == "cpu":
        result, tensors_peak = tensors_peak_of(lambda: run_trial(config, overwrite=True))
    else:
        result, tensors_peak = run_trial(config, overwrite=True), None
    losses = []
    if result.history_path:
        import pandas as pd

        history = pd.read_parquet(result.history_path)
        losses = history["loss"].dropna().tolist() if "loss" in history else []
    return {"row": json.loads(json.dumps(result.to_row(), default=str)), "losses": losses, "pid": os.getpid(),
            "tensors_peak": tensors_peak, "build_seconds": round(built_seconds, 1)}


def tensors_peak_of(run):
    """(run(), the peak of live CPU tensor bytes while it ran): torch.profiler's memory events
    summed in time order, an allocation positive and a free negative."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        value = run()
    live = peak = 0
    for event in sorted(profiler.profiler.kineto_results.events(), key=lambda e: e.start_ns()):
        if event.name() == "[memory]" and event.device_type() == DeviceType.CPU:
            live += event.nbytes()
            peak = max(peak, live)
    return value, peak


def run_case(case: Case, device: str, steps: int, work: Path, timeout: float) -> dict:
    """One case in a fresh Python process with this one's path (a stand-in's `-S` included)."""
    out = work / "cases" / f"{case.slug}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    command = [sys.executable, *(["-S"] if sys.flags.no_site else []), str(Path(__file__).with_name("gpu_check.py")),
               "--case", f"{case.model}:{case.method}" + (":checkpointing" if case.checkpointing else ""),
               "--device", device, "--steps", str(steps), "--work", str(work), "--case-out", str(out)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if done.returncode or not out.is_file():
        return {"error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1][:200]}
    return json.loads(out.read_text())


def memory_verdict(measured: int | None, estimate: int | None) -> tuple[bool, str]:
    if not measured or not estimate:
        return False, f"measured {measured}, estimate {estimate}: nothing to compare"
    off = (estimate - measured) / measured
    return abs(off) <= MEMORY_TOLERANCE, (f"measured {measured / 2**20:.0f} MiB, estimate {estimate / 2**20:.0f} MiB "
                                          f"({off:+.0%}; within {MEMORY_TOLERANCE:.0%} passes)")


def loss_verdict(losses: list[float]) -> tuple[bool, str]:
    third = len(losses) // 3
    if third < 1:
        return False, f"{len(losses)} losses logged: too few to judge (need 3)"
    first, last = sum(losses[:third]) / third, sum(losses[-third:]) / third
    return last < LOSS_FALL * first, f"loss {first:.3f} -> {last:.3f} (first and last third of {len(losses)} logs)"
