"""Context Adjustment (CONTA): M_t of Eq. 3 from the confounder set.

The confounder set, X_m and the prior, and the choices the paper leaves open
about them, are in :mod:`conta_core.confounder`. Two further choices the paper
leaves open live here, each a ``conta:`` config key:

* ``m_scale``: Eq. 3 gives M = sum_i alpha_i c_i P(c_i). With P = 1/n that is
  the alpha-weighted average mask divided by n (max ~0.09 on the demo, ~0.02 on
  VOC with n = 20), against backbone features of ~1, so the network can hardly
  see it. ``normalised`` divides by sum_i alpha_i P(c_i) (= 1/n for a uniform
  prior): M becomes the alpha- and prior-weighted average of the class masks,
  in [0, 1], whatever n is; ``prior`` is Eq. 3 as printed.
* ``attention_init``: ``default`` is nn.Linear's U(+-1/sqrt(hw)); then the
  logits (W1 X_m)^T (W2 c_i) / sqrt(n) are ~0.03 and alpha is uniform for
  every image, so M does not depend on the image and W1, W2 get almost no
  gradient. ``scaled`` draws W1 and W2 from N(0, 1/r^2) with r the typical norm
  of the maps they project (r_x for X_m, r_c for the c_i), so the logits have a
  spread of about 1 and alpha depends on the image from the first step.
"""
from __future__ import annotations

import math

import torch
from torch import nn

M_SCALES = ("prior", "normalised")
ATTENTION_INITS = ("default", "scaled")


class ContextAdjustment(nn.Module):
    """Eq. 3: M = sum_i alpha_i c_i P(c_i), alpha = softmax_i((W1 X_m)^T (W2 c_i) / sqrt(n)).

    W1, W2 (n x hw) are learnable and trained with the classifier; C and P(c)
    are fixed buffers for the round (they are saved in the checkpoint).
    ``x_norm``: the typical norm of X_m for ``attention_init: scaled`` (None:
    the typical norm of the c_i).
    """

    def __init__(self, confounder: torch.Tensor, prior: torch.Tensor, *, m_scale: str = "prior",
                 attention_init: str = "default", x_norm: float | None = None):
        super().__init__()
        if m_scale not in M_SCALES:
            raise ValueError(f"conta.m_scale must be one of {M_SCALES}, got {m_scale!r}")
        if attention_init not in ATTENTION_INITS:
            raise ValueError(f"conta.attention_init must be one of {ATTENTION_INITS}, got {attention_init!r}")
        n, h, w = confounder.shape
        self.map_size = (h, w)
        self.m_scale = m_scale
        self.register_buffer("confounder", confounder.reshape(n, h * w).float().clone())
        self.register_buffer("prior", prior.float().clone())
        self.w1 = nn.Linear(h * w, n, bias=False)
        self.w2 = nn.Linear(h * w, n, bias=False)
        if attention_init == "scaled":
            norms = self.confounder.norm(dim=1)
            c_norm = float(norms[norms > 0].mean()) if bool((norms > 0).any()) else 1.0
            with torch.no_grad():
                self.w1.weight.normal_(0.0, 1.0 / (x_norm or c_norm))
                self.w2.weight.normal_(0.0, 1.0 / c_norm)

    def attention(self, x_m: torch.Tensor) -> torch.Tensor:
        """alpha: [B, n], each row sums to 1."""
        n = self.confounder.shape[0]
        query = self.w1(x_m.flatten(1))          # [B, n]  = W1 X_m
        keys = self.w2(self.confounder)          # [n, n]  row i = W2 c_i
        return torch.softmax(query @ keys.t() / math.sqrt(n), dim=1)

    def adjust(self, alpha: torch.Tensor) -> torch.Tensor:
        """M ([B, 1, h, w]) from the attention alpha ([B, n])."""
        weights = alpha * self.prior                     # alpha_i P(c_i)
        if self.m_scale == "normalised":
            weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)
        return (weights @ self.confounder).reshape(-1, 1, *self.map_size)

    def forward(self, x_m: torch.Tensor) -> torch.Tensor:
        """x_m: [B, h, w] reduced masks -> M: [B, 1, h, w]."""
        return self.adjust(self.attention(x_m))
