"""Methods that train the model's own weights: all of them, or only the classifier head."""

from __future__ import annotations

from sentisweep.trial.methods.base import BuiltModel, MethodSpec, load_classifier, register_method
from sentisweep.trial.models import linear_layout


def build_full(model, params, num_labels, opts):
    return BuiltModel(*load_classifier(model, num_labels, opts))


def build_head_only(model, params, num_labels, opts):
    net, tok = load_classifier(model, num_labels, opts)
    heads = linear_layout(net, net.config.model_type).head_modules
    for name, parameter in net.named_parameters():
        parameter.requires_grad = any(h in name.split(".") for h in heads)
    return BuiltModel(net, tok)


register_method(MethodSpec("full", build_full, trains_weights="all", description="every parameter trains",
                           learning_rates=(1e-5, 2e-4)))
register_method(MethodSpec("head-only", build_head_only, trains_weights="head", learning_rates=(1e-4, 3e-2),
                           description="frozen body, only the classifier head trains", frozen_in_fp32=True))
