r"""Imitator policies for behavior cloning.

Both map a window of the last ``history`` *augmented states* — the observation concatenated with
the previous action, as in the paper — to an action:

* :class:`MLPImitator` — depth, width, activation, optional layer norm and dropout; it reads
  only the newest augmented state (``history = 1``). The paper's default has 4 layers.
* :class:`TransformerImitator` — a small causal transformer over the window; the action is read
  off the last position.

Inputs are standardized by statistics of the demonstrations, stored as buffers so that a saved
state dict is a complete policy. Every policy takes ``x`` of shape ``(..., history, d_in)`` and
returns ``(..., d_act)``, so a batched evaluator can call it on ``(n_checkpoints, n_ic, W, d)``
through ``torch.func.functional_call``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gvatheory._checks import check_choice, check_int, check_range

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU}


@dataclass(frozen=True)
class ImitatorSpec:
    """Architecture of an imitator; ``d_in`` is obs_dim + act_dim (augmented state)."""

    d_in: int
    d_act: int
    kind: str = "mlp"
    depth: int = 4
    width: int = 256
    activation: str = "relu"
    layer_norm: bool = False
    dropout: float = 0.0
    history: int = 1
    n_heads: int = 4

    def __post_init__(self):
        check_int("d_in", self.d_in, 1)
        check_int("d_act", self.d_act, 1)
        check_choice("kind", self.kind, ("mlp", "transformer"))
        check_int("depth", self.depth, 1)
        check_int("width", self.width, 1)
        check_choice("activation", self.activation, tuple(ACTIVATIONS))
        check_range("dropout", self.dropout, 0.0, 1.0, high_open=True)
        check_int("history", self.history, 1)
        if self.kind == "mlp" and self.history != 1:
            raise ValueError(
                f"history={self.history} is out of range for kind='mlp': an MLP reads one augmented state (history=1)"
            )
        check_int("n_heads", self.n_heads, 1)
        if self.kind == "transformer" and self.width % self.n_heads:
            raise ValueError(f"width={self.width} must be divisible by n_heads={self.n_heads}")


class _Standardized(nn.Module):
    def __init__(self, spec: ImitatorSpec):
        super().__init__()
        self.spec = spec
        self.register_buffer("in_mean", torch.zeros(spec.d_in))
        self.register_buffer("in_std", torch.ones(spec.d_in))

    @torch.no_grad()
    def set_normalization(self, inputs: Tensor) -> None:
        """Standardize inputs by the mean and sd of ``inputs`` (rows are augmented states)."""
        flat = inputs.reshape(-1, self.spec.d_in)
        self.in_mean.copy_(flat.mean(0))
        self.in_std.copy_(flat.std(0).clamp_min(1e-6))

    def _normalize(self, x: Tensor) -> Tensor:
        return (x - self.in_mean) / self.in_std


class MLPImitator(_Standardized):
    def __init__(self, spec: ImitatorSpec):
        super().__init__(spec)
        layers: list[nn.Module] = []
        d = spec.d_in
        for _ in range(spec.depth - 1):
            layers.append(nn.Linear(d, spec.width))
            if spec.layer_norm:
                layers.append(nn.LayerNorm(spec.width))
            layers.append(ACTIVATIONS[spec.activation]())
            if spec.dropout > 0:
                layers.append(nn.Dropout(spec.dropout))
            d = spec.width
        layers.append(nn.Linear(d, spec.d_act))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        # x: (..., 1, d_in) -> (..., d_act)
        return self.net(self._normalize(x[..., -1, :]))


class TransformerImitator(_Standardized):
    def __init__(self, spec: ImitatorSpec):
        super().__init__(spec)
        self.embed = nn.Linear(spec.d_in, spec.width)
        self.pos = nn.Parameter(torch.zeros(spec.history, spec.width))
        layer = nn.TransformerEncoderLayer(
            spec.width,
            spec.n_heads,
            dim_feedforward=4 * spec.width,
            dropout=spec.dropout,
            # relu and gelu by name (torch's fused path); tanh and silu as modules
            activation=spec.activation if spec.activation in ("relu", "gelu") else ACTIVATIONS[spec.activation](),
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, spec.depth, enable_nested_tensor=False)
        self.head = nn.Linear(spec.width, spec.d_act)
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(spec.history), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-2]
        h = self.embed(self._normalize(x.reshape(-1, *x.shape[-2:]))) + self.pos  # (B, W, width)
        h = self.blocks(h, mask=self.causal, is_causal=True)  # (B, W, width)
        return self.head(h[:, -1]).reshape(*lead, self.spec.d_act)  # (..., d_act)


def make_imitator(spec: ImitatorSpec) -> _Standardized:
    return MLPImitator(spec) if spec.kind == "mlp" else TransformerImitator(spec)
