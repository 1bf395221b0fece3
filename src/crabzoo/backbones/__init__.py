"""LLM backbones: any ``transformers`` causal LM (:class:`HFCausalLM`), the Qwen2.5-Omni thinker
(:class:`QwenOmniThinker`), locally trained tokenizers and the I-LoRA parameter counter."""

from crabzoo.backbones.base import MEDIA_WRAPPERS, PLACEHOLDERS, Backbone
from crabzoo.backbones.hf_causal_lm import HFCausalLM
from crabzoo.backbones.params import count_ilora_parameters
from crabzoo.backbones.qwen_omni import QwenOmniThinker
from crabzoo.backbones.tokenizer import train_tokenizer

__all__ = [
    "MEDIA_WRAPPERS", "PLACEHOLDERS", "Backbone", "HFCausalLM", "QwenOmniThinker", "count_ilora_parameters",
    "train_tokenizer",
]
