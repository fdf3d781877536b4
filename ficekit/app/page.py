"""The gradio page: photo | mask | result, an instruction box, live previews, the rounds, undo / redo / reset.

`build_page` lays out one gr.Blocks app around a session factory; `serve` starts it on a local address.
Each browser tab gets its own Tab in gr.State, so nothing is shared between users but the frozen models.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import gradio as gr

from . import tab as actions

# The demo's photos are small (128 px): fill each image box and scale them up crisply.
CSS = """
.ficekit-image img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
#ficekit-history img { image-rendering: pixelated; }
#ficekit-status { min-height: 3.2em; }
#ficekit-status progress { accent-color: var(--color-accent); height: 0.7em; }
"""

IMAGE_HEIGHT = 320
HISTORY_COLUMNS = 8
INSTRUCTION_HINT = "red t-shirt · add white stripes · make it navy · long sleeves · polka dots instead · plain"


def build_page(
    new_session: actions.NewSession,  # photo [3, H, W] in [0, 1] -> EditSession (the models are shared)
    examples: Sequence[str | Path] = (),  # the bundle's example photos
    about: str = "",  # one markdown line under the title (bundle, device, iterations)
    preview_every: int = 2,  # live preview after every this many optimisation steps
) -> gr.Blocks:
    """The ficekit page as a gr.Blocks app (not launched): see `serve`."""
    with gr.Blocks(title="ficekit", analytics_enabled=False) as page:
        # This browser tab's actions.Tab; gradio deletes it some time after the tab closes, stopping its edit.
        tab = gr.State(None, delete_callback=actions.stop_edit)
        gr.Markdown("# ficekit: edit the garment in a photo from text\n" + about)
        with gr.Row(equal_height=True):
            photo = gr.Image(
                label="Photo (upload or pick an example)", type="filepath", image_mode=None, sources=["upload"],
                height=IMAGE_HEIGHT, elem_id="ficekit-photo", elem_classes="ficekit-image",
            )
            mask = gr.Image(
                label="Edit mask (the repainted region; the rest is kept)", interactive=False, format="png",
                height=IMAGE_HEIGHT, buttons=[], elem_id="ficekit-mask", elem_classes="ficekit-image",
            )
            result = gr.Image(
                label="Result (live while editing; download as PNG)", interactive=False, format="png",
                height=IMAGE_HEIGHT, buttons=["download", "fullscreen"], elem_id="ficekit-result",
                elem_classes="ficekit-image",
            )
        if examples:
            gr.Examples(
                examples=[[str(p)] for p in examples], inputs=photo, label="Bundle examples (click one)",
                elem_id="ficekit-examples",
            )
        with gr.Row(equal_height=True):
            instruction = gr.Textbox(
                label="Instruction (a first description, then follow-ups)", placeholder=INSTRUCTION_HINT, scale=5,
                max_lines=1, elem_id="ficekit-instruction",
            )
            with gr.Column(scale=1, min_width=160):
                edit = gr.Button("Edit", variant="primary", elem_id="ficekit-edit")
                stop = gr.Button("Stop", variant="stop", size="sm", elem_id="ficekit-stop")
        status = gr.Markdown(actions.INTRO, elem_id="ficekit-status")
        with gr.Row():
            history = gr.Gallery(
                label="Rounds (current last)", columns=HISTORY_COLUMNS, rows=1, height=150, format="png",
                object_fit="contain", allow_preview=False, interactive=False, fit_columns=False, buttons=[],
                elem_id="ficekit-history", scale=5,
            )
            with gr.Column(scale=1, min_width=160):
                undo = gr.Button("Undo", size="md", elem_id="ficekit-undo")
                redo = gr.Button("Redo", size="md", elem_id="ficekit-redo")
                reset = gr.Button("Reset to the photo", size="md", elem_id="ficekit-reset")

        view = [mask, result, history, status]

        def run_edit(tab_value: actions.Tab | None, text: str, progress: gr.Progress = gr.Progress()):  # noqa: B008
            yield from actions.run_edit(tab_value, text, preview_every, progress)

        edits = [
            trigger(run_edit, inputs=[tab, instruction], outputs=view, show_progress_on=[status], concurrency_id="edit")
            for trigger in (edit.click, instruction.submit)
        ]
        # preprocess=False: ficekit reads the file itself, so a bad file gets ficekit's message, not PIL's.
        photo.change(
            functools.partial(actions.open_photo, new_session=new_session), inputs=photo, outputs=[tab, *view],
            preprocess=False, cancels=edits, show_progress="minimal",
        )
        stop.click(actions.stop_edit, inputs=tab, outputs=None, cancels=edits, queue=False)
        for button, action in ((undo, actions.undo), (redo, actions.redo), (reset, actions.reset)):
            button.click(action, inputs=tab, outputs=view, show_progress="hidden")
    return page


def serve(page: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, quiet: bool = False) -> None:
    """Run the page on http://host:port until interrupted: one edit at a time on the shared models, other
    tabs' edits queue; no share link, no server-side rendering process, no telemetry."""
    page.queue(default_concurrency_limit=1).launch(
        server_name=host, server_port=port, share=False, inbrowser=False, quiet=quiet, show_error=True,
        css=CSS, ssr_mode=False, mcp_server=False, max_file_size="64mb", footer_links=[],
    )
