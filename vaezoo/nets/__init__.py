"""Plain torch building blocks for encoders and decoders (no Pyro here)."""

from vaezoo.nets.conv import ConvDecoder, ConvEncoder
from vaezoo.nets.deconv import DeconvDecoder
from vaezoo.nets.mlp import ACTIVATIONS, MLP, MLPDecoder, MLPEncoder
from vaezoo.nets.transformers import Affine5Transformer, AffineTransformer, SpatialTransformer, TPSTransformer, make_transformer

__all__ = ["ACTIVATIONS", "MLP", "MLPEncoder", "MLPDecoder", "ConvEncoder", "ConvDecoder", "DeconvDecoder",
           "SpatialTransformer", "AffineTransformer", "Affine5Transformer", "TPSTransformer", "make_transformer"]
