"""`uniqa app`'s model side: `gradio_app.QualityApp` (the work, without gradio), `worker` (the
process that runs it for the page process of `uniqa app`) and `space` (a Space's files).

The page itself is `uniqa_app.page`. Imports nothing heavy: `gradio` is imported when the page
is built (`pip install "uniqa-hf[app]"`).
"""
