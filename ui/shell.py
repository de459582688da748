"""What the app's shell hands every tab: the shared components and the ZeroGPU wrapper."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from diffusion import SpritePipeline


@dataclass
class Shell:
    """The model picker, the last generated sprites, and how to borrow a GPU for a handler."""

    model: gr.Dropdown
    sprites: gr.State  # uint8 (n, H, W, 3) of the last Generate run in this session, or None
    default_pipe: SpritePipeline
    gpu: Callable[[Callable], Callable]
