"""Sentence embeddings from a registry model (pretrained, or a trial's checkpoint): pooling
and batched extraction. `ray_jobs/embed.py` runs `Embedder` in Ray Data actors.

Why our own loop rather than the notebook one (batches of 8 in dataset order, padded to
the longest, mean over *all* positions): sorting texts by length before batching removes
most padding (43% of positions at max_length 512 on IMDb), and a mean over padding
positions is a different embedding altogether (min cosine 0.29 to the masked mean). On a CPU
with AVX-512 the linears run through oneDNN with packed weights (`onednn.py`; benchmarks/README.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from sentisweep.config import DEFAULT_MAX_LENGTH, POOLINGS, default_cache_dir
from sentisweep.exit_codes import BadInput
from sentisweep.results import trial_info
from sentisweep.storage import local_copy
from sentisweep.trial.device import cuda_half_dtype, inference_autocast
from sentisweep.trial.methods.base import no_kv_cache, quantized_queries_in_autocast_dtype, with_pad_token
from sentisweep.trial.models import ModelSpec, get_model_spec, materialize

# CLS is the first token of an encoder; a decoder's first token has seen nothing else.
# The last real token is where a decoder has read the whole text; an encoder has no such token.
FAMILY_POOLINGS: dict[str, tuple[str, ...]] = {"encoder": ("mean", "cls"), "decoder": ("mean", "last")}
QUANTIZATIONS = ("4bit", "8bit")
# Texts per forward pass: on CPU 8 was fastest (8 x 512 tokens keeps the largest activation
# under glibc's 32 MiB mmap threshold; benchmarks/README.md). GPUs want more (embed_xgb_gpu.yaml: 64).
DEFAULT_BATCH_SIZE = 8
META_KEY = b"sentisweep"  # embeddings Parquet: model, checkpoint, pooling, ... as JSON in the footer


class EmbeddingError(BadInput):
    """Bad embedding input; the message names the field, the value and what is allowed."""


def pool(hidden, mask, pooling: str):
    """(batch, length, dim) hidden states -> (batch, dim). `mask` is 1 on real tokens;
    rows are right-padded (we pad them so)."""
    if pooling == "mean":  # padding positions excluded, unlike the notebook loop
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last":
        last = mask.sum(dim=1) - 1
        return hidden[np.arange(hidden.shape[0]), last]
    raise EmbeddingError(f"pooling = {pooling!r}: unknown; allowed: {', '.join(POOLINGS)}")


def check_pooling(spec: ModelSpec, pooling: str | None) -> str:
    pooling = pooling or spec.pooling
    allowed = FAMILY_POOLINGS[spec.family]
    if pooling not in allowed:
        raise EmbeddingError(f"pooling = {pooling!r}: not for {spec.name} (a {spec.family}); "
                             f"allowed: {', '.join(allowed)}")
    return pooling


def check_checkpoint(checkpoint: str | Path | None, cache_dir: str | Path | None = None) -> Path | None:
    """The checkpoint's local folder (one in object storage, s3://..., is downloaded once into
    the cache), checked to hold a model or a peft adapter."""
    if checkpoint is None:
        return None
    try:
        path = local_copy(checkpoint, cache_dir or default_cache_dir())
    except (OSError, ValueError) as err:  # pyarrow: no such object, no credentials
        raise EmbeddingError(f"checkpoint = {str(checkpoint)!r}: {err}") from None
    if not path.is_dir():
        raise EmbeddingError(f"checkpoint = {str(checkpoint)!r}: no such folder (a trial's "
                             "<output_dir>/checkpoint, written when training.keep_checkpoint is true)")
    if not ((path / "adapter_config.json").is_file() or (path / "config.json").is_file()):
        raise EmbeddingError(f"checkpoint = {str(checkpoint)!r}: neither a peft adapter (adapter_config.json) "
                             "nor a model folder (config.json)")
    return path


def load_backbone(spec: ModelSpec, checkpoint: Path | None, cache_dir: str, device: str = "cpu",
                  quantize: str | None = None):
    """(backbone, tokenizer): the transformer body without its head, eval mode, on `device`.
    A checkpoint is a trial's: a full classifier, or a peft adapter on the registry model,
    which is merged into the weights (one matmul per layer instead of two)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from sentisweep.trial.checkpoint import load_checkpoint

    # Dtypes said, not the stored ones (transformers loads a Hub model in the dtype it was saved
    # in): fp32 on CPU (no bf16 units here), the GPU's fast half precision on CUDA; a checkpoint's
    # adapter merges in fp32 first (trial/checkpoint.py), then the weights go to that dtype.
    load_kwargs = _quantization_kwargs(quantize, device)
    dtype = torch.float32 if device == "cpu" else cuda_half_dtype()
    if checkpoint is None:
        tokenizer = with_pad_token(AutoTokenizer.from_pretrained(spec.resolve_tokenizer()))
        model = AutoModel.from_pretrained(materialize(spec, cache_dir), **({"dtype": dtype} | load_kwargs))
        no_kv_cache(model)
    else:
        labels = trial_info(checkpoint).get("label_names") or ["0", "1"]
        classifier, tokenizer = load_checkpoint(checkpoint, cache_dir, labels, spec, merge=not quantize, **load_kwargs)
        model = classifier.base_model
    if quantize:
        quantized_queries_in_autocast_dtype(model)
    else:
        model = model.to(device, dtype=dtype)
    return model.eval(), tokenizer


def _quantization_kwargs(quantize: str | None, device: str) -> dict:
    if quantize is None:
        return {}
    if quantize not in QUANTIZATIONS:
        raise EmbeddingError(f"quantize = {quantize!r}: allowed: {', '.join(QUANTIZATIONS)} or none")
    if quantize == "8bit" and device != "cuda":
        raise EmbeddingError("quantize = '8bit': needs a CUDA GPU (bitsandbytes 8-bit does not run on CPU here); "
                             "use 4bit or none")
    try:
        from transformers import BitsAndBytesConfig
    except ImportError as err:  # pragma: no cover - bitsandbytes is a dependency
        raise EmbeddingError(f"quantize = {quantize!r}: bitsandbytes is not installed ({err})") from None
    import torch

    if quantize == "4bit":
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                    bnb_4bit_compute_dtype=torch.float32 if device == "cpu" else cuda_half_dtype())
    else:  # pragma: no cover - GPU only
        config = BitsAndBytesConfig(load_in_8bit=True)
    return {"quantization_config": config, "device_map": {"": device if device == "cpu" else 0}}


@dataclass
class EmbedStats:
    texts: int = 0
    real_tokens: int = 0
    positions: int = 0  # real + padding positions computed
    squared_lengths: float = 0.0  # sum of real length^2: the attention FLOPs' share
    seconds: float = 0.0


class Embedder:
    """Loads the model once; `embed(texts)` returns float32 (n, dim) in the input order.
    Inside a call, texts are sorted by token length and cut into batches padded to their
    own longest text, so little of the work is padding."""

    def __init__(self, model: str, checkpoint: str | Path | None = None, pooling: str | None = None,
                 max_length: int = DEFAULT_MAX_LENGTH, batch_size: int = DEFAULT_BATCH_SIZE, device: str = "cpu",
                 cache_dir: str | None = None, quantize: str | None = None, threads: int | None = None,
                 truncation: str = "head", head_share: float = 0.25):
        import torch

        if threads:
            torch.set_num_threads(threads)  # Ray sets OMP_NUM_THREADS to 1 for fractional CPUs
        if max_length < 2 or batch_size < 1:
            raise EmbeddingError(f"max_length = {max_length}, batch_size = {batch_size}: both must be positive "
                                 "(max_length at least 2)")
        cache_dir = cache_dir or default_cache_dir()
        self.spec = get_model_spec(model)
        self.pooling = check_pooling(self.spec, pooling)
        self.checkpoint = check_checkpoint(checkpoint, cache_dir)
        self.max_length, self.batch_size, self.device = max_length, batch_size, device
        self.truncation, self.head_share = truncation, head_share  # which tokens of a long text: as training kept
        self.model, self.tokenizer = load_backbone(self.spec, self.checkpoint, cache_dir, device, quantize)
        # On a CPU where it is the faster, linears through oneDNN with packed weights (onednn.py: 1.68x
        # on an AVX-512 CPU). (pack_linears leaves GPU weights alone; 4-bit/8-bit models keep their own kernels.)
        from sentisweep.trial.onednn import faster_here, pack_linears

        self.packed_linears = pack_linears(self.model) if faster_here() and not quantize else 0
        self.dim = self.model.config.hidden_size if hasattr(self.model.config, "hidden_size") else self.model.config.dim
        self.stats = EmbedStats()

    def embed(self, texts: list[str]) -> np.ndarray:
        import time

        import torch

        from sentisweep.trial.batching import length_sorted_batches
        from sentisweep.trial.tokenization import encode

        start = time.perf_counter()
        ids = encode(list(texts), self.tokenizer, self.max_length, self.truncation, self.head_share)
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        with torch.inference_mode(), inference_autocast(self.device):
            for rows, input_ids, mask in length_sorted_batches(ids, self.batch_size, self.tokenizer.pad_token_id):
                # A batch without padding (texts cut at max_length, the longest) needs no mask:
                # attention runs faster without one (600 IMDb reviews at 512: +3-5%, identical).
                device_mask = mask.to(self.device)
                hidden = self.model(input_ids=input_ids.to(self.device),
                                    attention_mask=None if bool(mask.all()) else device_mask).last_hidden_state
                out[rows] = pool(hidden.float(), device_mask, self.pooling).cpu().numpy()
                self.stats.real_tokens += int(mask.sum())
                self.stats.positions += int(mask.numel())
                self.stats.squared_lengths += float((mask.sum(dim=1).double() ** 2).sum())
        self.stats.texts += len(ids)
        self.stats.seconds += time.perf_counter() - start
        return out


def read_embeddings(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """(row_ids, labels, float32 matrix, metadata) of one `<split>.parquet`."""
    table = pq.read_table(path)
    if "embedding" not in table.schema.names or META_KEY not in (table.schema.metadata or {}):
        raise EmbeddingError(f"{path}: not an embeddings file written by ray_jobs/embed.py "
                             f"(columns {table.schema.names})")
    column = table.column("embedding").combine_chunks()
    matrix = column.values.to_numpy().reshape(len(table), column.type.list_size)
    return (table.column("row_id").to_numpy(), table.column("label").to_numpy(), matrix,
            json.loads(table.schema.metadata[META_KEY]))
