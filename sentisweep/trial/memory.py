"""A trial's peak accelerator memory, estimated before anything loads: from the model's config
(its module tree built on the meta device: shapes, no weights), the method, the precision and
the batch. A sweep shows it in its dry run, refuses a trial that cannot fit its GPU, and can size
each trial's share of one GPU from it (`gpus_per_trial: auto`).

    weights      frozen body at its dtype (4-bit where quantized), trainable weights in fp32
    optimizer    AdamW: two fp32 moments per trainable weight
    activations  kept for the backward pass: per layer and token about 9 h + 2 i values of the
                 compute dtype in a BERT-like layer, h the hidden and i the feed-forward size
                 (Korthikanti et al. 2022: 34 s b h bytes at fp16 with 1-byte dropout masks, i.e.
                 17 h values when i = 4 h; fused attention keeps no s x s scores); about twice that
                 in a Qwen3 layer (gated_decoder_layer_bytes). Each adapted linear layer adds its
                 input after LoRA's dropout and the dropout's 1-byte mask (1.25 x its input
                 width) plus the r values of its A; IA3 adds the vector's input. With gradient
                 checkpointing: one layer's worth plus each layer's input
    gradients    fp32, one per trainable weight. The backward pass frees each layer's saved
                 activations as it writes that layer's gradients, so the peak holds the larger of
                 the two, not their sum: the peak is weights + optimizer + max(activations, gradients)
                 (MiniLM-L6 full fine-tuning, batch 16 x 128, torch's allocator on CPU: 821 MiB
                 at the peak = 87 weights + 174 optimizer + 549 saved activations + 11 transient)
How close it comes on these CPUs: benchmarks/memory_estimate.py and benchmarks/README.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from sentisweep.config import TrialConfig

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
# NF4: half a byte a weight, plus one absmax per 64 weights (fp32, or 8-bit with double quantization)
FOUR_BIT_BYTES = {True: 0.5 + 1.0 / 64 + 4.0 / (64 * 256), False: 0.5 + 4.0 / 64}
CUDA_CONTEXT_BYTES = 500 * 2**20  # the CUDA context and cuBLAS workspace, before any tensor
# values kept per head, pair of positions and layer by attentions that are not fused (above)
UNFUSED_ATTENTION = {"deberta-v2": 4, "deberta": 4}
# decoders whose layers keep what gated_decoder_layer_bytes counts, not BERT's 9h + 2i
GATED_DECODERS = {"qwen3"}


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    gradients: int
    optimizer: int
    activations: int
    overhead: int = 0

    @property
    def allocated(self) -> int:
        """What torch's allocator holds at the peak: like for like with `max_memory_allocated`,
        which never counts the CUDA context."""
        return self.weights + self.optimizer + max(self.activations, self.gradients)

    @property
    def total(self) -> int:
        """What the GPU must hold: the allocator's peak and the CUDA context."""
        return self.allocated + self.overhead

    def describe(self) -> str:
        gib = 2**30
        return (f"{self.total / gib:.2f} GiB (weights {self.weights / gib:.2f}, gradients {self.gradients / gib:.2f}, "
                f"optimizer {self.optimizer / gib:.2f}, activations {self.activations / gib:.2f})")


def estimate_trial_memory(config: TrialConfig, device: str, precision: str) -> MemoryEstimate | None:
    """The estimate for this trial on `device` at `precision` (fp32 | bf16 | fp16), or None when the
    model's config cannot be had here (a hub id offline)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from sentisweep.trial.methods import get_method, resolved_params
    from sentisweep.trial.models import hub_config, linear_layout

    model_cfg = hub_config(config.model)
    if model_cfg is None:
        return None
    method = get_method(config.method.name)
    params = resolved_params(config.method)
    try:
        with torch.device("meta"):
            skeleton = (AutoModelForCausalLM if not method.trains else AutoModelForSequenceClassification).from_config(
                model_cfg)
    except ValueError:  # no such head for this architecture (zero-shot on an encoder): the trial says why
        return None
    total = sum(p.numel() for p in skeleton.parameters())
    layout = linear_layout(skeleton, model_cfg.model_type)
    modules = dict(skeleton.named_modules())
    head = sum(p.numel() for name, p in skeleton.named_parameters() if set(name.split(".")) & set(layout.head_modules))
    targets = layout.resolve(params["placement"]) if "placement" in params else []
    # the method says what its adapters weigh and keep per token (LoRA: A and B; IA3: a vector)
    adapters, adapter_values = method.adapter_size(params, modules, layout, targets) if method.adapter_size else (0, 0)
    trainable = ({"all": total, "head": head}.get(method.trains_weights, adapters + head)) if method.trains else 0

    compute = BYTES[precision]
    body_linears = layout.attention + layout.ffn  # what QLoRA quantizes: every body linear, head excluded
    quantized = sum(modules[n].in_features * modules[n].out_features for n in body_linears
                    if method.needs_bitsandbytes)
    weights = weight_bytes(method, params, total, head, adapters, quantized, device, compute)
    # a frozen body under a trained head keeps nothing for a backward pass that never reaches it:
    # one layer's worth at a time, as evaluation (tiny-qwen3 head-only, CPU, 256 tokens: 10 MiB of
    # tensors at the peak, 34 estimated as if the body's activations were kept)
    keeps_activations = method.trains and method.trains_weights != "head"
    autocast = device == "cuda" and compute == 2
    # The residual stream's bytes a value: fp32 where torch's layer_norm (an fp32 op under CUDA
    # autocast) makes it so in BERT-like layers, and under QLoRA, whose embeddings and norms peft
    # keeps in fp32 and whose 4-bit linears return their input's dtype. Qwen3's own RMSNorm
    # returns its input's dtype: a bf16 body keeps a bf16 stream (Qwen3-0.6B LoRA, H100: +0%).
    fp32_stream = method.needs_bitsandbytes or (autocast and model_cfg.model_type not in GATED_DECODERS)
    activations = activation_bytes(model_cfg, config.training, compute, adapter_values * compute, keeps_activations,
                                   frozen_body=method.trains_weights != "all", autocast=autocast,
                                   stream=4 if fp32_stream else compute)
    if method.trains_weights == "all" and autocast:
        # mixed precision: autocast casts each fp32 weight to bf16/fp16 for its matmul, and the
        # matmul keeps that copy for the backward pass (the input's gradient needs it), freed
        # layer by layer as the saved activations are (part of the H100 fit: benchmarks/README.md).
        activations += total * compute
    return MemoryEstimate(weights=int(weights), gradients=int(trainable * 4) if method.trains else 0,
                          optimizer=int(trainable * 8) if method.trains else 0, activations=int(activations),
                          overhead=CUDA_CONTEXT_BYTES if device == "cuda" else 0)


def weight_bytes(method, params: dict, total: int, head: int, adapters: int, quantized: int, device: str,
                 compute: int) -> float:
    """Full fine-tuning keeps fp32 master weights (mixed precision computes in bf16/fp16). Adapters
    and zero-shot on CUDA hold the frozen body in the compute dtype, fp32 elsewhere and where the
    method keeps it so (head-only; QLoRA's embeddings, norms and head), its `quantized` linear
    weights in 4 bits; what trains (adapters, head) in fp32."""
    if method.trains_weights == "all":
        return total * 4
    body = compute if device == "cuda" and not method.frozen_in_fp32 else 4
    frozen = total - head if method.trains else total
    packed = quantized * FOUR_BIT_BYTES[bool(params.get("double_quant", True))]
    return packed + (frozen - quantized) * body + ((head + adapters) * 4 if method.trains else 0)


def gated_decoder_layer_bytes(model_cfg, hidden: int, ffn: int, heads: int, compute: int,
                              frozen: bool = False, stream: int | None = None) -> float:
    """Bytes a Qwen3-style layer keeps per token for its backward pass. Its attention is wider than
    its hidden size (Qwen3-0.6B: 16 heads x 128 = 2,048 against 1,024), its four RMSNorms (input,
    after attention, and on each head's query and key) keep their input in fp32 and their output,
    SDPA keeps the query, the key and value repeated to every head (a padding mask rules out
    SDPA's own GQA) and its output, and the gated MLP keeps 4 values per FFN unit (the gate, its
    SiLU, the up projection, their product) where BERT's keeps 2. In values: 2 (2h + q + k) + 4q + 4i.
    A frozen body (adapters) keeps no linear's input for a weight's gradient: each norm's input, SDPA's
    four and the MLP's 3, (2h + q + k) + 4q + 3i.
    Measured (the tensors autograd saves, fp32, CPU, per layer from 2 against 4 layers): Qwen3-0.6B's
    shape 30,762 values a token (this gives 30,720; BERT's 9h + 2i gave 15,360); tiny-qwen3 1,416
    (1,280 here); frozen, tests/test_registry.py's Qwen3 shape 2,572 (2,816 here), tiny-qwen3 904 (896).
    `stream`: the bytes of a frozen linear's output where they differ from the compute dtype's. Under
    QLoRA the MLP's three are fp32 (a 4-bit linear returns its fp32 input's dtype) while SDPA's four
    are cast to the compute dtype: Qwen3-4B QLoRA, H100, batch 16 x 256, 33,933 MiB measured against
    26,065 planned with the MLP in bf16, 6 i x 4,096 tokens x 36 layers = 8,208 MiB short."""
    head_dim = getattr(model_cfg, "head_dim", None) or hidden // heads
    query = heads * head_dim
    key = (getattr(model_cfg, "num_key_value_heads", None) or heads) * head_dim
    norms = 2 * hidden + query + key  # each norm's input (fp32 inside the norm), and its output if trained
    if frozen:
        return norms * 4 + 4 * query * compute + 3 * ffn * (stream or compute)
    return norms * 4 + (norms + 4 * query + 4 * ffn) * compute


def activation_bytes(model_cfg, t, compute: int, adapter_activations: float, trains: bool,
                     frozen_body: bool = False, autocast: bool = False, stream: int | None = None) -> float:
    """What the peak holds of activations: kept for the backward pass while training (fewer with
    gradient checkpointing), one layer's worth at a time when only evaluating. `autocast`: CUDA
    mixed precision; `stream`: the residual stream's bytes a value (default the compute dtype's)."""
    layers = getattr(model_cfg, "num_hidden_layers", None) or model_cfg.n_layers
    hidden = getattr(model_cfg, "hidden_size", None) or model_cfg.dim
    ffn = getattr(model_cfg, "intermediate_size", None) or getattr(model_cfg, "hidden_dim", 4 * hidden)
    stream = stream or compute
    # An unfused attention keeps values per head and pair of positions: DeBERTa's disentangled
    # scores (content, content-to-position, position-to-content), their softmax and its dropout
    # mask, about 4 per layer. Measured (benchmarks/memory_estimate.py's trial, CPU, tiny-deberta
    # full fine-tuning, batch 16 x 512): 340 MiB of tensors at the peak, 76 estimated without this
    # term, 332 with it. Fused kernels (SDPA: BERT, RoBERTa, Qwen3 on CUDA) keep none. They are
    # fp32 whatever the compute dtype: CUDA autocast runs softmax in fp32, and its output and the
    # dropout's stay so until the product with the values (DeBERTa-v3-base full, H100, bf16,
    # batch 16 x 256: 4 x 2 bytes x 12 heads x 256 x 4,096 tokens x 12 layers = 1,152 MiB short).
    heads = getattr(model_cfg, "num_attention_heads", 0)
    unfused = UNFUSED_ATTENTION.get(model_cfg.model_type, 0)
    if model_cfg.model_type in GATED_DECODERS:
        per_token_layer = gated_decoder_layer_bytes(model_cfg, hidden, ffn, heads, compute, frozen_body, stream)
    else:
        per_token_layer = (9 * hidden + 2 * ffn) * compute + unfused * heads * t.max_length * 4
        if autocast:
            per_token_layer += bert_autocast_extra(hidden, compute, fused=not unfused)
    if trains:
        tokens = t.batch_size * t.max_length
        if t.gradient_checkpointing:  # each layer's input, in the stream's dtype
            activations = tokens * (layers * hidden * stream + per_token_layer + adapter_activations / layers)
        else:
            activations = tokens * (layers * per_token_layer + adapter_activations)
        # evaluation batches hold one layer at a time; training's peak is larger unless they are much bigger
        activations = max(activations, t.eval_batch_size * t.max_length * per_token_layer)
    else:  # no backward: one layer's worth at a time, and the last position's logits
        activations = t.eval_batch_size * t.max_length * per_token_layer
    return activations


def bert_autocast_extra(hidden: int, compute: int, fused: bool) -> float:
    """Bytes a BERT-like layer keeps per token under CUDA autocast beyond 9h + 2i values of the
    compute dtype (Korthikanti's count, every value in half precision): both layer norms' inputs are
    fp32 (+2 bytes x 2h), each of the query, key and value projections keeps its own half-precision
    copy of their fp32 input where one was counted (+2 x 2h), and SDPA keeps its output beside the
    output projection's reshaped copy (+2h). That is 10h bytes: at batch 16 x 256 on an H100 (bf16)
    DistilBERT full measured 1,781 MiB against 1,506 planned without it (+180 MiB with it) and
    RoBERTa-base 3,328 against 2,888 (+360)."""
    return (4 - compute) * 2 * hidden + 2 * compute * hidden + (compute * hidden if fused else 0)
