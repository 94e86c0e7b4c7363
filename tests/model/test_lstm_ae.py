from __future__ import annotations

import pytest
import torch

from sentinel.model import LstmAutoencoder


@pytest.mark.parametrize("num_layers", [1, 2])
def test_forward_keeps_the_window_shape(num_layers: int) -> None:
    torch.manual_seed(0)
    module = LstmAutoencoder(n_features=3, hidden_size=8, latent_size=4, num_layers=num_layers)
    x = torch.randn(5, 16, 3)
    out = module(x)
    assert out.shape == (5, 16, 3)
    assert torch.isfinite(out).all()


def test_reconstruction_depends_only_on_the_latent_code() -> None:
    # The decoder sees the latent vector alone, so the same input gives the same output
    # whatever else is in the batch.
    torch.manual_seed(0)
    module = LstmAutoencoder(2, 8, 4, 1).eval()
    x = torch.randn(4, 10, 2)
    with torch.inference_mode():
        together = module(x)
        alone = module(x[1:2])
    torch.testing.assert_close(together[1:2], alone)
