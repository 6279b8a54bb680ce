"""The paper's experiments on the built-in YCB-synthetic benchmark: gaps, cached assets, recipes, reports."""
