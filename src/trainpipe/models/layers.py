"""Small building blocks chosen by name from config."""

from __future__ import annotations

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}


def activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


def norm_1d(name: str, features: int) -> nn.Module:
    """Normalization over a feature vector."""
    if name == "layernorm":
        return nn.LayerNorm(features)
    if name == "batchnorm":
        return nn.BatchNorm1d(features)
    if name == "rmsnorm":
        return nn.RMSNorm(features)
    return nn.Identity()


def norm_2d(name: str, channels: int) -> nn.Module:
    """Normalization over feature maps; layer/RMS norms normalize each position's channels."""
    if name == "batchnorm":
        return nn.BatchNorm2d(channels)
    if name == "layernorm":
        return nn.GroupNorm(1, channels)  # LayerNorm over (C, H, W), the usual CNN analogue
    if name == "rmsnorm":
        return _ChannelRMSNorm(channels)
    return nn.Identity()


class _ChannelRMSNorm(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.RMSNorm(channels)

    def forward(self, x):
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def init_weights(module: nn.Module, scheme: str, activation_name: str) -> None:
    """Kaiming for ReLU-family activations, Xavier otherwise; zero biases; norms at identity."""
    nonlinearity = "relu" if activation_name in ("relu", "gelu", "silu") else "tanh"
    for layer in module.modules():
        if isinstance(layer, nn.Linear | nn.Conv2d):
            if scheme == "kaiming":
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            else:
                nn.init.xavier_uniform_(layer.weight, gain=nn.init.calculate_gain(nonlinearity))
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
