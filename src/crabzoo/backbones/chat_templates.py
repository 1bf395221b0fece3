"""Default chat templates for tokenizers that carry none (locally trained or base-model tokenizers).

A tokenizer's own template always wins; these apply only when it has none. Each entry names the template's
end-of-turn token, which becomes the tokenizer's eos (the processor appends eos after every target, and
generation stops on it).
"""

from __future__ import annotations

from dataclasses import dataclass

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""ChatML (Qwen2 style): ``<|im_start|>role\\ncontent<|im_end|>\\n``; generation prompt ``<|im_start|>assistant\\n``."""

LLAMA2 = (
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set system = '<<SYS>>\n' + messages[0]['content'] + '\n<</SYS>>\n\n' %}{% set turns = messages[1:] %}"
    "{% else %}{% set system = '' %}{% set turns = messages %}{% endif %}"
    "{% for message in turns %}"
    "{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + (system if loop.first else '') + message['content'] | trim + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ ' ' + message['content'] | trim + ' ' + eos_token }}"
    "{% endif %}{% endfor %}"
)
"""LLaMA-2-chat: ``<s>[INST] <<SYS>>\\nsystem\\n<</SYS>>\\n\\nuser [/INST] answer </s>``; the prompt ends with
``[/INST]`` whether or not a generation prompt is asked for."""


@dataclass(frozen=True)
class ChatTemplate:
    """A Jinja chat template, its end-of-turn (eos) token and the text that opens the assistant turn."""

    jinja: str
    eos_token: str
    generation_prompt: str


TEMPLATES: dict[str, ChatTemplate] = {
    "chatml": ChatTemplate(CHATML, "<|im_end|>", "<|im_start|>assistant\n"),
    "llama2": ChatTemplate(LLAMA2, "</s>", " [/INST]"),
}
"""Built-in templates by name (``chat_template: chatml`` or ``llama2`` in YAML)."""
