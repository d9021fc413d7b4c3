"""Tuning the embedded model: LoRA adapters trained with PEFT, exported for llama.cpp."""
