"""Chat templates (our own wording) for the proxy models.

Both templates wrap assistant content in ``{% generation %}`` / ``{% endgeneration %}``,
so trl's ``assistant_only_loss`` can mask everything except what the assistant says.
"""

from __future__ import annotations

# Special tokens of the tiny proxy; they are part of its vocabulary from tokenizer training.
TINY_TURN_START = "<|turn|>"
TINY_TURN_END = "<|end|>"
TINY_BOS = "<|bos|>"
TINY_PAD = "<|pad|>"
TINY_UNK = "<|unk|>"
TINY_SPECIAL_TOKENS = [TINY_PAD, TINY_BOS, TINY_UNK, TINY_TURN_START, TINY_TURN_END]

# One turn: "<|turn|>role\ncontent<|end|>\n". The assistant's text and its closing marker
# are the generated span, so the model learns to stop.
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['content'] is string %}{% set text = message['content'] %}"
    "{% else %}{% set text = message['content'] | map(attribute='text') | join('') %}{% endif %}"
    "{{ '<|turn|>' + message['role'] + '\\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ text + '<|end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}"
    "{{ text + '<|end|>\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|turn|>assistant\\n' }}{% endif %}"
)

# Gemma-3 turn markup for the base (non-instruct) 270M model, which ships without a
# template. Gemma has no system role: a system message is folded into the first user turn.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% set ns = namespace(system='') %}"
    "{% for message in messages %}"
    "{% if message['content'] is string %}{% set text = message['content'] %}"
    "{% else %}{% set text = message['content'] | map(attribute='text') | join('') %}{% endif %}"
    "{% if message['role'] == 'system' %}"
    "{% set ns.system = ns.system + text + '\\n\\n' %}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<start_of_turn>model\\n' }}"
    "{% generation %}{{ text | trim + '<end_of_turn>' }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}"
    "{{ '<start_of_turn>user\\n' + ns.system + text | trim + '<end_of_turn>\\n' }}"
    "{% set ns.system = '' %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)
