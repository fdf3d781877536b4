"""ficekit's local web page: `python -m ficekit.app` (gradio, the optional extra `pip install 'ficekit[app]'`).

`tab` holds one browser tab's editing session and what each control does to it; `page` lays out the
gr.Blocks page and wires the controls. Importing this package imports neither gradio nor torch.
"""
