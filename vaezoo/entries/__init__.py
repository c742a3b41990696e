"""Zoo entries: one module per family, each registering its builders with ``vaezoo.zoo.register``."""

from vaezoo.entries import aae, rho_vae, sos_vae, spatial_vae, transformer_vae, vae, vae2l  # noqa: F401
