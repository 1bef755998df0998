"""Projection / anomaly-detection heads."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from xrad.errors import ConfigError

__all__ = ["MLPHead"]


class MLPHead(nn.Module):
    """Fully connected head: Linear → ReLU → ... → Linear over ``dims`` (no activation after the last layer).

    ``dims=(512, 256, 128)`` gives Linear(512, 256) → ReLU → Linear(256, 128), the paper's "512→256→128" head.
    ``bias=False`` is what Deep SAD (Ruff et al.) recommends for the anomaly-detection head: with biases the
    network can map every input to the centre (a constant output) and reach zero loss trivially.
    """

    def __init__(self, dims: Sequence[int] = (512, 256, 128), bias: bool = True) -> None:
        super().__init__()
        dims = tuple(int(d) for d in dims)
        if len(dims) < 2 or min(dims) < 1:
            raise ConfigError(f"head dims {dims} are invalid; give at least (input, output) positive sizes")
        self.dims = dims
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            if i > 0:
                layers.append(nn.ReLU(inplace=True))
            layers.append(nn.Linear(d_in, d_out, bias=bias))
        self.net = nn.Sequential(*layers)

    @property
    def in_dim(self) -> int:
        """Input size of the head."""
        return self.dims[0]

    @property
    def out_dim(self) -> int:
        """Output size of the head."""
        return self.dims[-1]

    def forward(self, h: Tensor) -> Tensor:
        """Map features h (B, dims[0]) to z (B, dims[-1])."""
        z: Tensor = self.net(h)
        return z
