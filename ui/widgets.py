"""Layout pieces every tab uses: the picture that shows sprites, the negative prompt box, and
bringing results into view."""

from __future__ import annotations

from typing import Any

import gradio as gr


def sprite_image(label: str, min_width: int = 160, **kwargs: Any) -> gr.Image:
    """An output image of sprites, drawn with hard pixel edges (the ``pixel`` CSS class), with
    its caption above the picture and no toolbar, so nothing covers a sprite. Given a
    ``height``, the picture fills it (the ``fill`` CSS class), so that one sprite shows as
    large as a sheet of sixteen rather than small inside an empty panel."""
    classes = ["pixel", "fill"] if "height" in kwargs else ["pixel"]
    with gr.Column(min_width=min_width):
        gr.Markdown(f"**{label}**", elem_classes="caption")
        return gr.Image(
            label=label,
            show_label=False,
            buttons=[],
            elem_classes=classes,
            interactive=False,
            **kwargs,
        )


def negative_prompt_box(elem_id: str, visible: bool = True) -> gr.Textbox:
    """The one-line box for a negative prompt: what guidance steers away from (a text model)."""
    return gr.Textbox(
        "",
        label="Negative prompt (optional)",
        placeholder="what guidance steers away from, e.g. dark",
        max_lines=1,
        visible=visible,
        elem_id=elem_id,
    )


def scroll_into_view(elem_id: str) -> str:
    """A browser-side event handler that scrolls the element ``elem_id`` to the top of the
    window unless it already starts in the window's upper half: on a phone the results sit far
    below the button that starts a run, and a tap that changes nothing on screen looks like a
    tap that did nothing."""
    return f"""() => {{
        const el = document.getElementById({elem_id!r});
        if (!el) return;
        const box = el.getBoundingClientRect();
        if (box.top < 0 || box.top > window.innerHeight / 2) {{
            el.scrollIntoView({{block: "start", behavior: "smooth"}});
        }}
    }}"""
