"""Fine-tuning methods: how a loaded model is made trainable (or evaluated without training).

A method is one `register_method(MethodSpec(...))` beside its code, with its parameters and
their defaults, the model families it supports, a `build` function, and an `evaluate`
function if it does not train. Impossible combinations raise `IncompatibleMethodError`,
which a trial records as status `skipped`. Add a method's module to the imports below and
one row to `METHOD_MATRIX` in tests/test_matrix.py.
"""

from sentisweep.trial.methods import adapters, finetune, zero_shot  # noqa: F401  (each registers itself)
from sentisweep.trial.methods.base import (
    METHODS,
    BuiltModel,
    IncompatibleMethodError,
    LoadOptions,
    MethodSpec,
    build,
    check_compatible,
    get_method,
    method_problems,
    register_method,
    resolved_params,
)

__all__ = ["METHODS", "BuiltModel", "IncompatibleMethodError", "LoadOptions", "MethodSpec", "build",
           "check_compatible", "get_method", "method_problems", "register_method", "resolved_params"]
