"""The e4e encoder (Encoder4Editing, IR-SE-50): photo -> W+ init for the FICE optimiser; loads FICE's e4e.pt."""

from .checkpoint import load_e4e, save_e4e
from .e4e import Encoder4Editing

__all__ = ["Encoder4Editing", "load_e4e", "save_e4e"]
