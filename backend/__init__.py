"""Canbao (参保): backend for enrolling residents in the urban-rural resident basic medical insurance."""

__version__ = "0.1.0"
