"""`uniqa app`: the Gradio app of a UniQA model (a Hugging Face Space, or local), in `gradio_app`.

Imports nothing heavy: `gradio` is imported when the app is built (`pip install "uniqa-hf[app]"`).
"""
