"""Context Adjustment (CONTA): M_t of Eq. 3 from the confounder set.

The confounder set, X_m and the prior, and the choices the paper leaves open
about them, are in :mod:`conta_core.confounder`.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class ContextAdjustment(nn.Module):
    """Eq. 3: M = sum_i alpha_i c_i P(c_i), alpha = softmax_i((W1 X_m)^T (W2 c_i) / sqrt(n)).

    W1, W2 (n x hw) are learnable and trained with the classifier; C and P(c)
    are fixed buffers for the round (they are saved in the checkpoint).
    """

    def __init__(self, confounder: torch.Tensor, prior: torch.Tensor):
        super().__init__()
        n, h, w = confounder.shape
        self.map_size = (h, w)
        self.register_buffer("confounder", confounder.reshape(n, h * w).float().clone())
        self.register_buffer("prior", prior.float().clone())
        self.w1 = nn.Linear(h * w, n, bias=False)
        self.w2 = nn.Linear(h * w, n, bias=False)

    def attention(self, x_m: torch.Tensor) -> torch.Tensor:
        """alpha: [B, n], each row sums to 1."""
        n = self.confounder.shape[0]
        query = self.w1(x_m.flatten(1))          # [B, n]  = W1 X_m
        keys = self.w2(self.confounder)          # [n, n]  row i = W2 c_i
        return torch.softmax(query @ keys.t() / math.sqrt(n), dim=1)

    def forward(self, x_m: torch.Tensor) -> torch.Tensor:
        """x_m: [B, h, w] reduced masks -> M: [B, 1, h, w]."""
        alpha = self.attention(x_m)
        m = (alpha * self.prior) @ self.confounder   # [B, hw]
        return m.reshape(-1, 1, *self.map_size)
