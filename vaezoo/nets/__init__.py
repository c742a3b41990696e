"""Plain torch building blocks for encoders and decoders (no Pyro here)."""

from vaezoo.nets.conv import ConvDecoder, ConvEncoder
from vaezoo.nets.deconv import DeconvDecoder
from vaezoo.nets.mlp import ACTIVATIONS, MLP, MLPDecoder, MLPEncoder

__all__ = ["ACTIVATIONS", "MLP", "MLPEncoder", "MLPDecoder", "ConvEncoder", "ConvDecoder", "DeconvDecoder"]
