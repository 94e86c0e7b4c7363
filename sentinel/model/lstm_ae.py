"""Sequence-to-sequence LSTM autoencoder over fixed-length multivariate windows.

The encoder's last hidden state is squeezed through a small latent vector; the decoder sees
only that vector, repeated at every time step, so it can reproduce normal patterns but not
arbitrary ones (Malhotra et al., "LSTM-based Encoder-Decoder for Multi-sensor Anomaly
Detection", 2016, https://arxiv.org/abs/1607.00148).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LstmAutoencoder"]


class LstmAutoencoder(nn.Module):
    """(B, T, F) -> (B, T, F) reconstruction; batch_first throughout."""

    def __init__(
        self, n_features: int, hidden_size: int, latent_size: int, num_layers: int = 1
    ) -> None:
        super().__init__()
        self.n_features = n_features
        self.hidden_size = hidden_size
        self.latent_size = latent_size
        self.num_layers = num_layers
        self.encoder = nn.LSTM(n_features, hidden_size, num_layers=num_layers, batch_first=True)
        self.to_latent = nn.Linear(hidden_size, latent_size)
        self.from_latent = nn.Linear(latent_size, hidden_size)
        self.decoder = nn.LSTM(hidden_size, hidden_size, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, n_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = x.shape[1]
        _, (h_n, _) = self.encoder(x)
        latent = self.to_latent(h_n[-1])  # last layer's final hidden state, (B, latent)
        seed = self.from_latent(latent).unsqueeze(1).expand(-1, steps, -1).contiguous()
        decoded, _ = self.decoder(seed)
        out: torch.Tensor = self.head(decoded)
        return out
