"""LoRA fine-tuning (peft + trl, Unsloth on CUDA): configs, training data, the trainer, and the proxy models it trains on."""
