"""Parameter-efficient adapters: LoRA (peft), fused I-LoRA with its routing variants, router telemetry,
adapter-only checkpoints and import/export of the official Crab / Crab+ I-LoRA weights."""

from crabzoo.adapters.base import Adapter
from crabzoo.adapters.ilora import ILoRA, ILoRALinear
from crabzoo.adapters.io import load_adapter, save_adapter
from crabzoo.adapters.lora import LoRA
from crabzoo.adapters.telemetry import RouterTelemetry

__all__ = ["Adapter", "ILoRA", "ILoRALinear", "LoRA", "RouterTelemetry", "load_adapter", "save_adapter"]
