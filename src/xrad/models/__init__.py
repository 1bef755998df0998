"""Plain ``torch.nn`` networks: 1-channel ResNet backbones, MLP heads, the encoder and the autoencoder."""

from xrad.models.autoencoder import Autoencoder, ResNet18Decoder, build_autoencoder
from xrad.models.encoder import Encoder, build_encoder
from xrad.models.heads import MLPHead
from xrad.models.resnet import ResNet18Backbone, ResNet50Backbone

__all__ = [
    "Autoencoder",
    "Encoder",
    "MLPHead",
    "ResNet18Backbone",
    "ResNet18Decoder",
    "ResNet50Backbone",
    "build_autoencoder",
    "build_encoder",
]
