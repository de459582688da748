"""Sprite Diffusion: schedules, a class-conditioned U-Net, samplers and a streaming pipeline."""

from .model import ContextUnet, UnetConfig
from .pipeline import Branches, Frame, SpritePipeline
from .samplers import SAMPLERS
from .schedules import SCHEDULES, Schedule, make_schedule, schedule_curves
from .text import SpriteCLIP

__all__ = [
    "SAMPLERS",
    "SCHEDULES",
    "Branches",
    "ContextUnet",
    "Frame",
    "Schedule",
    "SpriteCLIP",
    "SpritePipeline",
    "UnetConfig",
    "make_schedule",
    "schedule_curves",
]
