"""Inference Endpoints handler of a UniQA model folder: copied as `handler.py` into every saved
(`save_pretrained`) and pushed (`uniqa push`) model folder, beside the remote code.

The Hugging Face inference toolkit imports `handler.py` from the repo, builds
`EndpointHandler(path)` once and calls it with the request's JSON (or, for an image body, with
`{"inputs": <PIL image>}`):

    {"inputs": <image>, "parameters": {"view_policy": "center", "return_group_scores": true}}
    {"inputs": [<image>, <image>, ...]}

An image is encoded bytes, a base64 string (a `data:image/...;base64,` URL too), a PIL image or
a local file path; URLs are refused (an endpoint fetching whatever it is sent is a liability).
The answer is `pipeline("image-quality")`'s: a dict per image (`score`, `mos`, each named head's
`X`, `X_mos`, ...), a list for a list. An item that cannot be read gets `{"error": "..."}` and
the others are scored (`parameters.errors` defaults to "return"; "raise" fails the request).

This file runs where uniqa-hf may be absent: it imports only the standard library, torch (through
transformers), transformers and PIL, and loads the folder with `trust_remote_code=True`.
"""

import base64
import binascii
import os

from transformers import pipeline

TASK = "image-quality"
MAX_BATCH_SIZE = 32


class EndpointHandler:
    """`EndpointHandler(path)(data) -> list | dict`, the interface of custom Inference Endpoints handlers."""

    def __init__(self, path: str = "", device=None):
        self.pipeline = pipeline(TASK, model=path or ".", trust_remote_code=True, device=device)

    def __call__(self, data: dict):
        if not isinstance(data, dict) or "inputs" not in data:
            raise ValueError('the request must be {"inputs": <image or list of images>, "parameters": {...}}')
        inputs = data["inputs"]
        parameters = dict(data.get("parameters") or {})
        parameters.setdefault("errors", "return")
        single = not isinstance(inputs, (list, tuple))
        items = [inputs] if single else list(inputs)
        sources, results = [], [None] * len(items)
        for position, item in enumerate(items):
            source, error = decode_input(item, position)
            if error is None:
                sources.append((position, source))
            elif parameters["errors"] == "raise":
                raise ValueError(error)
            else:
                results[position] = {"error": error}
        if sources:
            batch_size = max(1, min(int(parameters.pop("batch_size", MAX_BATCH_SIZE)), MAX_BATCH_SIZE))
            scored = self.pipeline([source for _, source in sources], batch_size=batch_size, **parameters)
            for (position, _), result in zip(sources, scored):
                results[position] = result
        return results[0] if single else results


def decode_input(item, position: int = 0) -> tuple:
    """One request item -> `(source for the pipeline, None)` or `(None, one-line error)`."""
    name = f"inputs[{position}]"
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item), None
    if isinstance(item, dict) and "image" in item:  # {"image": <base64>} as some clients send
        return decode_input(item["image"], position)
    if isinstance(item, str):
        text = item.strip()
        if text.lower().startswith(("http://", "https://", "ftp://", "s3://", "gs://")):
            return None, f"{name}: URLs are not fetched; send the image's bytes or base64."
        if text.startswith("data:"):
            text = text.partition(",")[2]
        elif len(text) < 4096 and os.path.isfile(text):
            return text, None
        try:
            return base64.b64decode(text, validate=True), None
        except (binascii.Error, ValueError):
            return None, f"{name}: neither base64 image data nor an existing file."
    if hasattr(item, "convert") and hasattr(item, "size"):  # a PIL image, as the toolkit gives for image bodies
        return item, None
    if type(item).__module__ == "numpy":
        return item, None
    return None, f"{name}: an image is bytes, base64 text, a PIL image or a file path, got {type(item).__name__}."

