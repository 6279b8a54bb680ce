"""ψ: distributions over render parameters (binned categoricals per object and factor, lighting weights)."""
