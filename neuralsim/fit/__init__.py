"""Fitting radiance fields to captures, and held-out image metrics."""

from neuralsim.fit.trainer import FitConfig, evaluate, fit

__all__ = ["FitConfig", "evaluate", "fit"]
