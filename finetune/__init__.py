"""LoRA fine-tuning, proxy models and the vLLM serving launcher."""
