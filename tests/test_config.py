"""Configs check themselves when loaded and report every problem at once."""

from __future__ import annotations

import pytest

from sentisweep.config import ConfigError
from sentisweep.config_load import load_config, parse_trial_config

pytestmark = pytest.mark.unit


def test_defaults_and_method_shorthand():
    config = parse_trial_config({"model": "tiny-bert", "method": "ia3"})
    assert config.method.name == "ia3" and config.training.max_length == 256
    # an ad-hoc trial's id ends in a hash of what it runs: another setting, another id
    assert config.resolved_trial_id() == f"tiny-bert__ia3__s42__{config.digest()}"
    other = parse_trial_config({"model": "tiny-bert", "method": "ia3", "training": {"learning_rate": 1e-4}})
    assert other.resolved_trial_id() != config.resolved_trial_id()
    moved = parse_trial_config({"model": "tiny-bert", "method": "ia3", "output_dir": "elsewhere"})
    assert moved.resolved_trial_id() == config.resolved_trial_id()  # where it is written is not what it runs


def test_yaml_states_only_what_differs(tmp_path):
    path = tmp_path / "trial.yaml"
    path.write_text("# python -m sentisweep.train --config trial.yaml\n"
                    "model: tiny-roberta\nmethod: {name: lora, r: 16, placement: attention+ffn}\n"
                    "training: {learning_rate: 0.0003}\n")
    config = load_config(path, "trial", overrides={"seed": 43, "training": {"epochs": 2}})
    assert (config.method.r, config.method.placement, config.seed) == (16, "attention+ffn", 43)
    assert config.training.learning_rate == 3e-4 and config.training.epochs == 2
    assert config.training.batch_size == 16  # untouched default


def test_all_problems_reported_at_once_with_field_value_and_allowed():
    with pytest.raises(ConfigError) as info:
        parse_trial_config({"model": "gpt-9", "method": {"name": "lora", "r": 0, "placement": "everything"},
                            "training": {"batch_size": 0, "precision": "int3"},
                            "data": {"validation_fraction": 1.5, "tex_column": "x"}})
    message = str(info.value)
    for expected in ["training.batch_size = 0", "training.precision = 'int3'", "'auto', 'fp32', 'fp16' or 'bf16'",
                     "data.validation_fraction = 1.5", "data.tex_column", "Extra inputs are not permitted",
                     "model = 'gpt-9': unknown; known:", "tiny-bert",
                     "method.r = 0: Input should be greater than 0",
                     "method.placement = 'everything': allowed: attention, ffn, attention+ffn, all-linear"]:
        assert expected in message, expected
    assert len(info.value.problems) == 7


def test_unknown_method_lists_known_ones():
    with pytest.raises(ConfigError, match=r"method.name = 'lorra': unknown; did you mean 'lora' or 'qlora' or "
                                          r"'dora'\? known: dora, full, head-only, ia3, lora, qlora, zero-shot"):
        parse_trial_config({"method": "lorra"})


def test_parameter_the_method_does_not_take():
    with pytest.raises(ConfigError, match=r"method.r = 8: not a parameter of method 'ia3'; it takes: placement"):
        parse_trial_config({"model": "tiny-bert", "method": {"name": "ia3", "r": 8}})


def test_zero_shot_prompt_needs_the_text_slot():
    with pytest.raises(ConfigError, match=r"must contain '\{text\}'"):
        parse_trial_config({"model": "tiny-qwen3", "method": {"name": "zero-shot", "prompt": "Sentiment:"}})


def test_hub_ids_and_local_folders_are_accepted(tmp_path):
    assert parse_trial_config({"model": "someorg/some-model"}).model == "someorg/some-model"
    assert parse_trial_config({"model": str(tmp_path)}).model == str(tmp_path)


def test_bad_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.yaml", "trial")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(tmp_path / "list.yaml", "trial")
    (tmp_path / "broken.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml", "trial")


def test_a_trial_file_may_state_its_kind(tmp_path):
    """`kind: trial` passes the kind check and loads (it was refused by the strict model after)."""
    path = tmp_path / "trial.yaml"
    path.write_text("# python -m sentisweep.train --config trial.yaml\nkind: trial\nmodel: tiny-bert\n")
    assert load_config(path, "trial").model == "tiny-bert"
    path.write_text("# python -m sentisweep.train --config trial.yaml\nkind: sweep\nmodel: tiny-bert\n")
    with pytest.raises(ConfigError, match="kind = 'sweep': this is a sweep config, not a trial config"):
        load_config(path, "trial")



@pytest.mark.parametrize("older", [False, True])
def test_checkpointing_reaches_the_trainer_under_either_name(older, tmp_path, monkeypatch):
    """transformers 5.23 renamed gradient_checkpointing to activation_checkpointing; the GPU
    machine's 5.17 knows only the old name (issue 37: every trial there would have crashed)."""
    import transformers

    from sentisweep.trial import run

    class Older:  # TrainingArguments as 5.0-5.22 declare it
        __dataclass_fields__ = {k: v for k, v in transformers.TrainingArguments.__dataclass_fields__.items()
                                if not k.startswith("activation_")}

        def __init__(self, **kwargs):
            self.kwargs = kwargs

    if older:
        monkeypatch.setattr(transformers, "TrainingArguments", Older)
    config = parse_trial_config({"model": "tiny-bert", "method": "lora", "training": {"gradient_checkpointing": True}})
    args = run._training_args(config, tmp_path, "cpu", "fp32", quiet=True)
    if older:
        assert args.kwargs["gradient_checkpointing"] is True and "activation_checkpointing" not in args.kwargs
        assert args.kwargs["gradient_checkpointing_kwargs"] == {"use_reentrant": False}
    else:
        assert args.activation_checkpointing and args.activation_checkpointing_kwargs == {"use_reentrant": False}


def test_a_trial_on_a_shared_gpu_is_capped_at_its_share(monkeypatch):
    """Issue 37: fractional GPU shares put several trials on one GPU with no cap, so one
    underestimate killed its neighbours. Below a whole GPU the trial's CUDA memory is capped."""
    import types

    import torch

    from sentisweep.trial.device import cap_gpu_memory

    fractions = []
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", fractions.append)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(total_memory=80 * 2**30))
    assert cap_gpu_memory(0.25, "cuda") == 20 * 2**30 and fractions == [0.25]
    assert cap_gpu_memory(1.0, "cuda") is None and cap_gpu_memory(None, "cuda") is None
    assert cap_gpu_memory(0.25, "cpu") is None and fractions == [0.25]
    with pytest.raises(ConfigError, match="gpu_share"):
        parse_trial_config({"model": "tiny-bert", "method": "lora", "training": {"gpu_share": 1.5}})


def test_what_to_do_about_the_problems_is_said_once_and_not_counted_as_a_field():
    # the study's refusals said "3 invalid config field(s)" of two fields and a line of advice
    err = ConfigError(["data.test_size = 16, but ...", "pooling = 'cls', but ..."], "study.yaml", "pass --overwrite")
    assert str(err) == ("2 invalid config field(s) in study.yaml:\n  - data.test_size = 16, but ...\n"
                        "  - pooling = 'cls', but ...\npass --overwrite")
