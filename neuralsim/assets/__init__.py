"""Ground truth: the built-in YCB object set, user meshes, the Mitsuba renderer, captures and scene sets."""
