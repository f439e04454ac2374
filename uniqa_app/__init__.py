"""`uniqa app`'s page process: the Gradio page, and the model worker it talks to.

Imports only the standard library, gradio and huggingface_hub, never `modeling_uniqa`: the page
is served while a worker process (`modeling_uniqa.app.worker`) imports torch and transformers
and loads the model, on another core (issue #26: the first page in under 10 s on 2 CPU cores).

    page.py     the page (`build_demo`, `launch`) around a backend: `QualityApp` in-process, or
    remote.py   `RemoteApp`, the proxy of the worker process;
    serve.py    `uniqa app`'s flags and its start: the worker, then the page;
    command.py  the `uniqa` console script (`uniqa app` here; every other subcommand in `modeling_uniqa.cli`).
"""
