"""The Gradio app's tabs, one module each, over a shared context (``ui.context``).

A tab is a class with ``title``, ``build(shell)`` (its controls and their wiring) and
``on_model(pipe)`` (its updates when another model is picked); ``TABS`` lists them in order.
"""

from .compare import CompareTab
from .forward import ForwardTab
from .generate import GenerateTab

TABS = [GenerateTab, ForwardTab, CompareTab]

__all__ = ["TABS", "CompareTab", "ForwardTab", "GenerateTab"]
