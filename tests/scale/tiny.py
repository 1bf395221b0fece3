"""A tiny audio-visual LLM for the scaling tests: a random LLaMA, an encoder of real transformer blocks, an
MLP connector and a fused I-LoRA adapter, trained on random token data with task labels."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from crabzoo.adapters.ilora import ILoRA
from crabzoo.data.mixing import ResumableDataLoader, TaskMixingSampler
from crabzoo.distributed import shard_model

VOCAB, HIDDEN, FEAT_IN, ENC_DIM, MEDIA_T, SEQ = 64, 32, 12, 16, 3, 10


class TinyBackbone(nn.Module):
    """A 2-layer LlamaForCausalLM with the backbone hooks the sharding plan reads."""

    module_group = "llm"

    def __init__(self, layers: int = 2, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(
            vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=layers,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        )
        self.model = LlamaForCausalLM(cfg).to(dtype)

    @property
    def decoder_layer_cls(self) -> type[nn.Module]:
        return type(self.model.model.layers[0])

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids)

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        return self.model(inputs_embeds=embeds, use_cache=False).logits


class TinyEncoder(nn.Module):
    """Stem + transformer blocks + norm; ``block_cls`` names the block class."""

    block_cls = nn.TransformerEncoderLayer

    def __init__(self, blocks: int = 2) -> None:
        super().__init__()
        self.stem = nn.Linear(FEAT_IN, ENC_DIM)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(ENC_DIM, 2, 32, dropout=0.0, batch_first=True) for _ in range(blocks)
        )
        self.norm = nn.LayerNorm(ENC_DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class TinyAV(L.LightningModule):
    """Frozen LLM + frozen encoder, trainable connector and I-LoRA on the LLM's linears."""

    def __init__(
        self,
        lr: float = 5e-3,
        dropout: float = 0.0,
        mixed_precision: str | None = None,
        activation_checkpointing: bool = False,
        adapter_dtype: torch.dtype | None = None,
        base_dtype: torch.dtype = torch.float32,
        seed: int = 0,
    ) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.backbone = TinyBackbone(dtype=base_dtype)
        self.visual_encoder = TinyEncoder()
        self.visual_connector = nn.Sequential(nn.Linear(ENC_DIM, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, HIDDEN)).to(base_dtype)
        self.backbone.requires_grad_(False)
        self.visual_encoder.requires_grad_(False)
        self.adapter = ILoRA(groups=("llm",), n_heads=2, rank=4, alpha=8.0, dropout=dropout)
        self.adapter.apply(self.module_groups(), {"llm": ("q_proj", "v_proj", "down_proj")})
        if adapter_dtype is not None:
            for p in self.adapter.trainable_parameters():
                p.data = p.data.to(adapter_dtype)
        self.lr = lr
        self.mp = mixed_precision
        self.ac = activation_checkpointing
        self.losses: list[float] = []
        self.steps: list[int] = []

    def module_groups(self) -> dict[str, nn.Module]:
        return {"llm": self.backbone, "visual_encoder": self.visual_encoder, "connector": nn.ModuleList([self.visual_connector])}

    def configure_model(self) -> None:
        mesh = getattr(self, "_device_mesh", None)
        if mesh is not None:
            shard_model(self, mesh, mixed_precision=self.mp, activation_checkpointing=self.ac)

    def forward(self, feats: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        media = self.visual_connector(self.visual_encoder(feats))
        embeds = self.backbone.embed(ids)
        x = torch.cat([media.to(embeds.dtype), embeds], dim=1)
        logits = self.backbone(x)[:, media.shape[1] :]
        return F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB).float(), ids[:, 1:].reshape(-1))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self(batch["feats"], batch["ids"])
        self.losses.append(float(loss.detach()))
        self.steps.append(int(self.global_step))
        self.log("train/loss", loss, batch_size=batch["ids"].shape[0])
        return loss

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.lr)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class TokenTasks(Dataset):
    """Random features and token sequences labelled with one of two tasks (task A: first 2/3 of the samples)."""

    def __init__(self, n: int = 48, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.feats = torch.randn(n, MEDIA_T, FEAT_IN, generator=g)
        self.ids = torch.randint(0, VOCAB, (n, SEQ), generator=g)
        self.tasks = ["task_a" if i < 2 * n // 3 else "task_b" for i in range(n)]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"feats": self.feats[i], "ids": self.ids[i], "task": self.tasks[i], "index": i}


def collate(items: list[dict]) -> dict:
    return {
        "feats": torch.stack([it["feats"] for it in items]),
        "ids": torch.stack([it["ids"] for it in items]),
        "tasks": [it["task"] for it in items],
        "index": [it["index"] for it in items],
    }


def loader(data: TokenTasks, batch_size: int = 4, seed: int = 0, **kwargs) -> ResumableDataLoader:
    sampler = TaskMixingSampler(data.tasks, batch_size, seed=seed, **kwargs)
    return ResumableDataLoader(data, batch_sampler=sampler, collate_fn=collate)
