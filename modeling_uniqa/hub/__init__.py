"""Publishing: adapters (save / load / check), named heads, conversion of OpenAI-format and HF CLIP
checkpoints, and pushing a folder to the Hub."""
