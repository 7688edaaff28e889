"""Program rewrites: moves that change the structure of the training program, found by matching its AST.

Each rewrite is a function from the parent's :class:`Source` to candidates;
it yields nothing when its precondition (the pattern it rewrites is present
and the change is not already made) does not hold.  They live in
:mod:`._rewrites_training` (optimizer, loop, precision) and
:mod:`._rewrites_model` (model, data, quantization); the helper code some of
them insert is in :mod:`._snippets`.  ``REWRITES`` is their catalogue order.
"""

from __future__ import annotations

from mlflow_autoresearch.specialists.playbook._catalogue import Rewrite
from mlflow_autoresearch.specialists.playbook._rewrites_model import (
    add_label_smoothing,
    add_layernorm,
    center_inputs,
    gelu_to_relu,
    int6_levels,
    qk_norm,
    random_flip,
    relu_to_gelu,
    sdpa_attention,
    shift_augment,
    z_loss,
)
from mlflow_autoresearch.specialists.playbook._rewrites_training import (
    bf16_autocast,
    channels_last,
    compile_model,
    grad_clip,
    plain_optimizer,
    sgd_nesterov,
    sgd_to_adamw,
    tf32_matmul,
)

REWRITES: tuple[Rewrite, ...] = (
    sgd_to_adamw, plain_optimizer, sgd_nesterov, grad_clip,
    bf16_autocast, channels_last, compile_model, tf32_matmul,
    sdpa_attention, qk_norm, relu_to_gelu, gelu_to_relu, add_layernorm,
    center_inputs, add_label_smoothing, shift_augment, random_flip,
    z_loss, int6_levels,
)
