"""neuralsim: learn which synthetic training images to render with radiance fields (Neural-Sim)."""

__version__ = "0.2.0"
