"""Generative programs p(x, z): priors, decoders and likelihoods, as ``PyroModule``s whose forward
is a Pyro model keeping the contract of DESIGN.md and registering its networks with Pyro."""

from vaezoo.models.likelihoods import LIKELIHOODS, Likelihood, make_likelihood
from vaezoo.models.transformer_vae import FlatPose, PosePrior, TransformerVAEModel
from vaezoo.models.vae import VAEModel
from vaezoo.models.aae import LatentMask, MaskedDecoderModel, OpenMask
from vaezoo.models.spatial import SpatialVAEModel

__all__ = [
    "VAEModel", "MaskedDecoderModel", "LatentMask", "OpenMask", "SpatialVAEModel", "TransformerVAEModel", "PosePrior", "FlatPose",
    "Likelihood", "LIKELIHOODS", "make_likelihood",
]
