"""Sprite Diffusion: schedules, a class-conditioned U-Net, samplers and a streaming pipeline."""

from .model import ContextUnet, UnetConfig
from .pipeline import Frame, SpritePipeline
from .samplers import SAMPLERS
from .schedules import Schedule

__all__ = ["SAMPLERS", "ContextUnet", "Frame", "Schedule", "SpritePipeline", "UnetConfig"]
