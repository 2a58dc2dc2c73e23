"""run_trial(config) -> TrialResult: train (or evaluate) and measure one trial, no Ray involved.

Whatever happens inside, a TrialResult comes back and is written to
`<output_dir>/result.parquet`: `ok` with metrics, `skipped` with the reason when the
combination cannot run here, or `failed` with the error (out of memory included).
"""

from __future__ import annotations

import json
import logging
import shutil
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sentisweep.config import TrialConfig
from sentisweep.layout import RESULT_FILE, TRIAL_INFO_FILE
from sentisweep.results import TrialResult, now_iso, predictions_frame, row_of, write_results
from sentisweep.storage import dir_bytes, umask_safetensors, write_parquet_atomic
from sentisweep.trial.data import TaskData, load_task_data
from sentisweep.trial.device import (
    cap_gpu_memory,
    cpu_name,
    release_accelerator_memory,
    resolve_device_and_precision,
)
from sentisweep.trial.memory import estimate_trial_memory
from sentisweep.trial.methods import (
    BuiltModel,
    IncompatibleMethodError,
    LoadOptions,
    build,
    get_method,
    resolved_params,
)
from sentisweep.trial.metrics import PeakMemory, Stopwatch, classification_metrics
from sentisweep.trial.models import get_model_spec, set_quiet
from sentisweep.trial.tokenization import tokenize_frame

log = logging.getLogger(__name__)


def run_trial(config: TrialConfig, quiet: bool = True, overwrite: bool = False,
              callbacks: list | None = None, resume_from: str | Path | None = None,
              annotate: Callable[[TrialResult], None] | None = None) -> TrialResult:
    """Train and evaluate one trial; never raises for a failure inside the trial. Bad data is
    bad input, not a trial's failure: DataError is raised before anything is written.
    `callbacks` are extra transformers TrainerCallbacks (a sweep reports evaluations with one).
    `resume_from`: a checkpoint this trial saved with `training.resumable` (a Trainer
    checkpoint folder): training continues at its step, with its optimizer and scheduler.
    `annotate` completes the row before its one write (a sweep adds its attempts)."""
    out = Path(config.output_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output_dir = {str(out)!r}: a file, not a folder")
    if (out / RESULT_FILE).exists() and not overwrite:
        raise FileExistsError(f"{out / RESULT_FILE} exists: this trial already ran "
                              "(pass overwrite=True / --overwrite to replace it)")
    data = load_task_data(config.data)
    set_quiet(quiet)
    result = row_of(config)
    with fresh_folder(out):
        try:
            _run(config, data, result, out, quiet, callbacks or [], resume_from)
            result.status = "ok"
        except IncompatibleMethodError as err:
            result.status, result.error, result.error_type = "skipped", str(err), type(err).__name__
        except Exception as err:  # out of memory included: failed trials are data
            result.status, result.error_type = "failed", type(err).__name__
            result.error = f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=-3)}"[:4000]
            log.error("trial %s failed: %s", result.trial_id, err)
            release_accelerator_memory()
        result.end_time = now_iso()
        if annotate:
            annotate(result)
        write_results([result], out / RESULT_FILE)
    return result


@contextmanager
def fresh_folder(out: Path):
    """The trial writes into an empty `out`. What was there is set aside first and deleted once
    the new row is written, so nothing of an old trial survives beside a new one (an old full
    model's weights beside a new adapter). Interrupted (Ctrl-C), the partial folder goes and
    the old one comes back: nothing half-written is left looking like a trial."""
    aside = out.with_name(f".{out.name}.replaced") if out.exists() else None
    if aside:
        shutil.rmtree(aside, ignore_errors=True)  # from a run killed before it could clean up
        out.rename(aside)
    try:
        yield
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        if aside:
            aside.rename(out)
        raise
    if aside:
        shutil.rmtree(aside, ignore_errors=True)


def _run(config: TrialConfig, data: TaskData, result: TrialResult, out: Path, quiet: bool,
         callbacks: list, resume_from: str | Path | None = None) -> None:
    import torch
    import transformers

    if config.training.threads:
        torch.set_num_threads(config.training.threads)  # Ray's OMP_NUM_THREADS is not reliable
    result.torch_threads = torch.get_num_threads()
    device, precision = resolve_device_and_precision(config.training.precision, config.training.device)
    result.device, result.precision_mode = device, precision
    result.device_name = torch.cuda.get_device_name(0) if device == "cuda" else cpu_name()
    result.gpu_memory_cap_bytes = cap_gpu_memory(config.training.gpu_share, device)
    spec = get_model_spec(config.model)
    estimate = estimate_trial_memory(config, device, precision)
    result.memory_estimate_bytes = estimate.allocated if estimate else None  # like peak_memory_bytes
    result.train_rows, result.validation_rows, result.test_rows = (
        len(data.splits[s]) for s in ("train", "validation", "test"))
    transformers.set_seed(config.seed)  # the head's initialisation depends on it
    with PeakMemory(device) as memory:
        options = LoadOptions(config.data.cache_dir, device, precision, config.training.attention_dropout,
                              config.training.gradient_checkpointing)
        built = build(config.method, spec, len(data.label_names), options)
        model = built.model
        if device == "cpu":
            _use_faster_cpu_kernels(model, config, result)
        _count_parameters(model, result)
        method = get_method(config.method.name)
        test = data.splits["test"]
        if method.trains:
            tokenized = {name: tokenize_frame(frame, built.tokenizer, spec.resolve_tokenizer(),
                                              config.training.max_length, config.data.cache_dir,
                                              config.data.truncation, config.data.head_share)
                         for name, frame in data.splits.items()}
            with _tensorboard_events(out) as events:
                probabilities = _train_and_predict(config, built, tokenized, result, out, device, precision,
                                                   quiet, [*callbacks, *events], resume_from)
            if result.checkpoint_path:  # what predict / export / embed need to use it alone
                info = {"model": config.model, "method": config.method.name, "variant": config.resolved_variant(),
                        "is_peft": built.is_peft,
                        "label_names": [str(n) for n in data.label_names],
                        "max_length": config.training.max_length, "truncation": config.data.truncation,
                        "head_share": config.data.head_share, "trial_id": result.trial_id}
                Path(result.checkpoint_path, TRIAL_INFO_FILE).write_text(json.dumps(info, indent=1))
        else:
            with Stopwatch() as clock:
                probabilities = method.evaluate(built, resolved_params(config.method), test["text"].tolist(),
                                                data.label_names, config.training.max_length,
                                                config.training.eval_batch_size, device)
            result.eval_seconds = clock.seconds
            result.eval_samples_per_second = len(test) / clock.seconds
    result.peak_memory_bytes, result.peak_memory_kind = memory.peak_bytes, memory.kind
    result.peak_memory_reserved_bytes = memory.reserved_bytes
    result.memory_growth_bytes = memory.peak_bytes - memory.start_bytes if device == "cpu" else None
    _score(result, test, probabilities, out)


def _use_faster_cpu_kernels(model, config: TrialConfig, result: TrialResult) -> None:
    """The CPU kernels the trial's config allows in place of torch's defaults, each counted in its row."""
    from sentisweep.trial.dropout import draw_dropout_from_uniform
    from sentisweep.trial.onednn import train_through_onednn, wanted

    # auto: 0 on a CPU where oneDNN is the slower, so the row says which kernels ran
    result.onednn_linears = train_through_onednn(model) if wanted(config.training.onednn_linears) else 0
    if config.training.uniform_dropout:
        result.uniform_dropouts = draw_dropout_from_uniform(model)


def _score(result: TrialResult, test: pd.DataFrame, probabilities, out: Path) -> None:
    """The test split's metrics into the row, and its per-example predictions beside it."""
    labels = test["label"].to_numpy()
    for key, value in classification_metrics(labels, probabilities).items():
        setattr(result, key, value)
    predictions = predictions_frame(test["row_id"], labels, probabilities)
    result.predictions_path = str(write_parquet_atomic(predictions, out / "predictions.parquet"))


def _count_parameters(model, result: TrialResult) -> None:
    result.total_params = sum(parameter_count(p) for p in model.parameters())
    result.trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    result.trainable_percent = 100.0 * result.trainable_params / max(1, result.total_params)


# -- training with the Hugging Face Trainer ----------------------------------------------

@dataclass
class TokenCounter:
    samples: int = 0
    real_tokens: int = 0
    positions: int = 0


class TokenizedRows:
    """A split's tokenized rows as the Trainer reads them: a map-style dataset of
    {input_ids, labels}. Plain Python, not a `datasets.Dataset`: the rows are already in
    memory."""

    def __init__(self, frame: pd.DataFrame, sort_by_length: bool = False):
        lengths = frame["input_ids"].map(len).to_numpy()
        # evaluation order does not matter; sorted batches carry little padding
        self.order = np.argsort(lengths, kind="stable") if sort_by_length else np.arange(len(frame))
        self.lengths = lengths[self.order]  # row i here is row order[i] of the split
        self.input_ids = frame["input_ids"].to_numpy()[self.order]
        self.labels = frame["label"].to_numpy()[self.order]

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.input_ids[i], "labels": int(self.labels[i])}


def _training_args(config: TrialConfig, out: Path, device: str, precision: str, quiet: bool):
    from transformers import TrainingArguments

    # transformers 5.23 renamed gradient_checkpointing to activation_checkpointing (the old name
    # warns, deprecated); 5.0-5.22, such as the GPU machine's 5.17, know only the old one
    fields = TrainingArguments.__dataclass_fields__
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    t = config.training
    evaluate = "no"
    eval_steps = None
    if t.eval_steps:
        evaluate, eval_steps = "steps", t.eval_steps
    elif t.eval_each_epoch:
        evaluate = "epoch"
        if t.max_steps:  # a run shorter than an epoch still evaluates (and keeps) its end
            evaluate, eval_steps = "steps", t.max_steps
    return TrainingArguments(
        output_dir=str(out / "trainer"), seed=config.seed, data_seed=config.seed,
        num_train_epochs=t.epochs, max_steps=t.max_steps or -1,
        learning_rate=t.learning_rate, lr_scheduler_type=t.lr_scheduler, warmup_steps=t.warmup_ratio,
        weight_decay=t.weight_decay,
        per_device_train_batch_size=t.batch_size, per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation,
        eval_strategy=evaluate, eval_steps=eval_steps, save_strategy=evaluate, save_steps=eval_steps,
        load_best_model_at_end=evaluate != "no", metric_for_best_model="accuracy",
        # resumable: the optimizer's and scheduler's state too, else the model alone
        greater_is_better=True, save_total_limit=1, save_only_model=not t.resumable,
        bf16=precision == "bf16", fp16=precision == "fp16", use_cpu=device == "cpu",
        dataloader_pin_memory=device == "cuda", remove_unused_columns=False,
        logging_steps=t.logging_steps, report_to="none", disable_tqdm=quiet,
        # the non-reentrant variant: it works with frozen inputs (adapters) and is torch's advice
        **{checkpointing: t.gradient_checkpointing, f"{checkpointing}_kwargs": {"use_reentrant": False}},
    )


@contextmanager
def _tensorboard_events(out: Path):
    """The HF Trainer's TensorBoard callback, writing the trial's loss, learning rate and validations
    into its own folder: a sweep uploads them once with the trial, not with every save of Tune's
    experiment (sweeps/driver.py). The writer the callback itself would pick: torch's (it needs the
    tensorboard package, as the lent GPU machine has), else tensorboardX (ray[tune]'s); none where
    neither is installed: the events are a view, the row does not depend on them. The writer is
    closed however the trial ends: the Trainer closes it only when training ends well, and one left
    open keeps its thread; at exit, Python 3.12 then prints tensorboardX's "can't create new thread
    at interpreter shutdown" traceback."""
    from transformers.integrations import TensorBoardCallback, is_tensorboard_available

    if not is_tensorboard_available():
        log.warning("no TensorBoard events: neither tensorboard nor tensorboardX is installed")
        yield []
        return
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        from tensorboardX import SummaryWriter
    # flushed every 5 s: a trial a scheduler stops is killed, not closed
    writer = SummaryWriter(str(out / "tensorboard"), flush_secs=5)
    try:
        yield [TensorBoardCallback(writer)]
    finally:
        writer.close()  # a second close, after the Trainer's, does nothing


def _validation_accuracy(prediction) -> dict[str, float]:
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    return {"accuracy": float((np.argmax(logits, axis=-1) == prediction.label_ids).mean())}


def _train_and_predict(config, built: BuiltModel, tokenized, result: TrialResult, out: Path,
                       device: str, precision: str, quiet: bool, callbacks: list, resume_from=None):
    from transformers import DataCollatorWithPadding, Trainer

    counter = TokenCounter()
    train_dataset = TokenizedRows(tokenized["train"])

    class MeasuredTrainer(Trainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            mask = inputs["attention_mask"]
            counter.samples += int(mask.shape[0])
            counter.real_tokens += int(mask.sum())
            counter.positions += int(mask.numel())
            return super().training_step(model, inputs, num_items_in_batch)

    trainer = MeasuredTrainer(
        model=built.model, args=_training_args(config, out, device, precision, quiet),
        train_dataset=train_dataset,
        eval_dataset=TokenizedRows(tokenized["validation"], sort_by_length=True),
        # each batch padded to its own longest row, not to max_length
        data_collator=DataCollatorWithPadding(built.tokenizer),
        compute_metrics=_validation_accuracy, callbacks=callbacks,
    )
    if quiet:  # without tqdm the Trainer prints every log dict; a sweep shows its own progress
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    if resume_from:
        state = json.loads((Path(resume_from) / "trainer_state.json").read_text())
        result.resumed_from_step = int(state["global_step"])
    with Stopwatch() as train_clock:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    history = pd.DataFrame(trainer.state.log_history)
    validation_seconds = float(history["eval_runtime"].sum()) if "eval_runtime" in history else 0.0
    result.train_seconds = train_clock.seconds - validation_seconds  # validation passes excluded
    result.train_tokens = counter.real_tokens
    result.train_steps = int(trainer.state.global_step)
    result.train_samples_per_second = counter.samples / result.train_seconds
    result.train_tokens_per_second = counter.real_tokens / result.train_seconds
    result.padding_fraction = 1 - counter.real_tokens / max(1, counter.positions)
    if "eval_accuracy" in history:
        best = history.loc[history["eval_accuracy"].idxmax()]
        result.best_val_accuracy, result.best_epoch = float(best["eval_accuracy"]), float(best["epoch"])
    result.history_path = str(write_parquet_atomic(history, out / "history.parquet"))

    return _predict_and_keep(trainer, built, tokenized, result, out, config)


def _predict_and_keep(trainer, built: BuiltModel, tokenized, result: TrialResult, out: Path, config):
    """The test split's class probabilities (in the split's order), and the trained model kept
    as `<out>/checkpoint` unless the config says not to."""
    from scipy.special import softmax

    test = TokenizedRows(tokenized["test"], sort_by_length=True)
    with Stopwatch() as eval_clock:
        logits = trainer.predict(test).predictions
    result.eval_seconds = eval_clock.seconds
    result.eval_samples_per_second = len(test) / eval_clock.seconds
    probabilities = np.empty((len(test), logits.shape[1]))
    # back from length order to the split's order
    probabilities[test.order] = softmax(np.asarray(logits, dtype=np.float64), axis=-1)

    shutil.rmtree(out / "trainer", ignore_errors=True)  # the best model is saved below
    if config.training.keep_checkpoint:
        checkpoint = out / "checkpoint"
        trainer.model.save_pretrained(checkpoint)  # safetensors: adapter only, or the full model
        umask_safetensors(checkpoint)
        built.tokenizer.save_pretrained(checkpoint)
        result.checkpoint_path = str(checkpoint)
        result.adapter_bytes = dir_bytes(checkpoint) - _tokenizer_bytes(checkpoint)
    return probabilities


def parameter_count(parameter) -> int:
    """How many weights a parameter holds: a 4-bit one is stored packed, two to a byte, so its
    own numel is half its weights; its quantization state knows the real shape."""
    state = getattr(parameter, "quant_state", None)
    return int(state.shape.numel()) if state is not None and hasattr(state, "shape") else parameter.numel()


def _tokenizer_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir()
               if f.is_file() and (f.name.startswith(("tokenizer", "special_tokens"))
                                   or f.name in ("vocab.txt", "vocab.json", "merges.txt")))
