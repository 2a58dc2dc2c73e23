"""Tiny random-weight model folders laid out as the real Hub repos are, tokenizer files
included, so that loading is tested the way a user's first run meets it: BERT and DistilBERT
ship `vocab.txt`, RoBERTa `vocab.json` + `merges.txt`, DeBERTa-v3 a SentencePiece `spm.model`
(and no tokenizer.json), Qwen3 a `tokenizer.json`. Tokenizers are trained on the texts given;
weights are random (2 layers, hidden 64). Nothing here is committed: tests and
`gpu_check.py` build them in a temporary folder.

    folders = build_folders(tmp_path, texts)        # {"bert": Path, "distilbert": ..., "qwen3": ...}
"""

from __future__ import annotations

import io
import json
from pathlib import Path

FAMILIES = ("bert", "distilbert", "roberta", "deberta-v3", "qwen3")
# what each real repo is, for the shipped configs' dry runs (tests map these ids to the folders)
HUB_IDS = {"bert-base-uncased": "bert", "distilbert-base-uncased": "distilbert", "roberta-base": "roberta",
           "microsoft/deberta-v3-base": "deberta-v3", "Qwen/Qwen3-0.6B": "qwen3", "Qwen/Qwen3-4B": "qwen3"}
VOCAB = 1000
SIZES = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)


def _wordpiece(folder: Path, texts: list[str]) -> int:
    from tokenizers import BertWordPieceTokenizer

    tokenizer = BertWordPieceTokenizer(lowercase=True)
    tokenizer.train_from_iterator(texts, vocab_size=VOCAB,
                                  special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tokenizer.save_model(str(folder))  # vocab.txt
    _write(folder / "tokenizer_config.json", {"do_lower_case": True, "model_max_length": 512})
    return tokenizer.get_vocab_size()


def _byte_bpe(folder: Path, texts: list[str]) -> int:
    from tokenizers import ByteLevelBPETokenizer

    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train_from_iterator(texts, vocab_size=VOCAB, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tokenizer.save_model(str(folder))  # vocab.json + merges.txt
    _write(folder / "tokenizer_config.json", {"model_max_length": 512, "tokenizer_class": "RobertaTokenizer"})
    return tokenizer.get_vocab_size()


def _sentencepiece(folder: Path, texts: list[str]) -> int:
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=VOCAB, model_type="unigram",
        pad_id=0, bos_id=1, eos_id=2, unk_id=3, pad_piece="[PAD]", bos_piece="[CLS]", eos_piece="[SEP]",
        unk_piece="[UNK]", user_defined_symbols=["[MASK]"], minloglevel=2,
        hard_vocab_limit=False)  # small texts have fewer pieces than VOCAB
    (folder / "spm.model").write_bytes(model.getvalue())
    _write(folder / "tokenizer_config.json", {
        "do_lower_case": False, "vocab_type": "spm", "split_by_punct": False, "model_max_length": 512,
        "tokenizer_class": "DebertaV2Tokenizer", "bos_token": "[CLS]", "eos_token": "[SEP]", "unk_token": "[UNK]",
        "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"})
    return sentencepiece.SentencePieceProcessor(model_proto=model.getvalue()).get_piece_size()


def _tokenizer_json(folder: Path, texts: list[str]) -> int:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer.save(str(folder / "tokenizer.json"))
    _write(folder / "tokenizer_config.json", {
        "tokenizer_class": "Qwen2Tokenizer", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
        "model_max_length": 512,
        # Qwen3's own template cut to what zero-shot prompting uses (no tools, thinking off)
        "chat_template": "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                         "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n"
                         "{% endif %}{% endif %}"})
    return tokenizer.get_vocab_size()


def _config(family: str, vocab_size: int):
    import transformers

    if family == "bert":
        return transformers.BertConfig(vocab_size=vocab_size, **SIZES)
    if family == "distilbert":
        return transformers.DistilBertConfig(vocab_size=vocab_size, dim=64, n_layers=2, n_heads=2, hidden_dim=128)
    if family == "roberta":
        return transformers.RobertaConfig(vocab_size=vocab_size, max_position_embeddings=514, pad_token_id=1,
                                          bos_token_id=0, eos_token_id=2, **SIZES)
    if family == "deberta-v3":  # relative positions, as deberta-v3-base
        return transformers.DebertaV2Config(vocab_size=vocab_size, relative_attention=True, position_buckets=64,
                                            pos_att_type=["p2c", "c2p"], position_biased_input=False,
                                            pad_token_id=0, **SIZES)
    return transformers.Qwen3Config(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                    num_key_value_heads=2, head_dim=32, intermediate_size=128,
                                    max_position_embeddings=512, tie_word_embeddings=True,
                                    bos_token_id=None, eos_token_id=2, pad_token_id=0)


TOKENIZERS = {"bert": _wordpiece, "distilbert": _wordpiece, "roberta": _byte_bpe, "deberta-v3": _sentencepiece,
              "qwen3": _tokenizer_json}


def build_folders(root: Path, texts: list[str], dtype: str = "float32", families=FAMILIES) -> dict[str, Path]:
    """One folder per family under `root` (built once: an existing folder is reused), with its
    weights saved in `dtype` ("float16" or "bfloat16" as some Hub checkpoints are stored)."""
    import torch
    import transformers

    folders = {}
    for family in families:
        folder = Path(root) / f"tiny-{family}-{dtype}"
        folders[family] = folder
        if (folder / "config.json").is_file():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        vocab_size = TOKENIZERS[family](folder, texts)
        torch.manual_seed(0)
        config = _config(family, vocab_size)
        model = (transformers.AutoModelForCausalLM if family == "qwen3" else transformers.AutoModel).from_config(config)
        model.to(getattr(torch, dtype)).save_pretrained(folder)
    return folders


def _write(path: Path, content: dict) -> None:
    path.write_text(json.dumps(content, indent=1))
