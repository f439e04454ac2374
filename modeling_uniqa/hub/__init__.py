"""Publishing: named heads on one backbone, conversion of OpenAI-format and HF CLIP checkpoints,
and pushing a model or adapter folder to the Hub. (The adapter format itself, `save_adapter` /
`load_adapter`, is `core.adapter_io`: the one model loader puts adapters on models.)"""
