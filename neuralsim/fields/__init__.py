"""Radiance fields: the `Field` interface, the fast grid field with NeRF-W appearance, checkpoints."""

from neuralsim.fields.base import AppearanceTable, Field, FieldFns
from neuralsim.fields.checkpoint import FORMAT_VERSION, load_field, save_field
from neuralsim.fields.grid import GridField, GridFieldConfig

__all__ = ["AppearanceTable", "FORMAT_VERSION", "Field", "FieldFns", "GridField", "GridFieldConfig", "load_field",
           "save_field"]
