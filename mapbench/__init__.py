"""mapbench: MAP estimation with diffusion priors for inverse problems."""
__version__ = "0.1.0"
