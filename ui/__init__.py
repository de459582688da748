"""The Gradio app's tabs, one module each, over what they share: ``ui.run`` (a request and its
run), ``ui.studio`` (the models and the sprites a tab starts from), and below those
``ui.limits``, ``ui.errors``, ``ui.sessions``, ``ui.storage`` and ``ui.widgets``. Beside the
tabs, ``ui.api`` holds the API-only endpoint, which no tab shows.

A tab is a class with ``title``, ``build(shell)`` (its controls and their wiring) and
``on_model(pipe)`` (its updates when another model is picked); ``TABS`` lists them in order.
"""

from .compare import CompareTab
from .edit import EditTab
from .forward import ForwardTab
from .generate import GenerateTab
from .guidance import GuidanceTab
from .morph import MorphTab
from .toy import ToyTab

TABS = [GenerateTab, EditTab, MorphTab, ForwardTab, CompareTab, GuidanceTab, ToyTab]

__all__ = [
    "TABS",
    "CompareTab",
    "EditTab",
    "ForwardTab",
    "GenerateTab",
    "GuidanceTab",
    "MorphTab",
    "ToyTab",
]
