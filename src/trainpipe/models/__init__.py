"""Architectures by name. Every encoder maps ``[batch, *input_shape]`` to ``[batch, embed_dim]``.

encoder = build_encoder(ModelConfig(name="cnn"), input_shape=[1, 8, 8])
model = Classifier(encoder, num_classes=10)
"""

from trainpipe.models.encoders import build_encoder
from trainpipe.models.heads import Classifier, MaskedReconstructor

__all__ = ["Classifier", "MaskedReconstructor", "build_encoder"]
