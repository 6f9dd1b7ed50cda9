"""LM-EEC on top of the PyPI `sam2` modules.

`LMEEC` subclasses `SAM2Base`, so every SAM 2 parameter keeps its official name, and adds the
`MV_MoE` fusion block. Instead of SAM 2's video-predictor control flow it exposes the building
blocks of one correspondence step (encode an image, encode a memory, condition on memories,
decode a mask); the memory policy lives in `lmeec_core.memory` and the per-frame protocol in
`lmeec_core.inference`. Two deliberate departures from SAM 2 reproduce the official LM-EEC code:
the mask decoder receives no dense prompt, and source masks are encoded as if they were logits.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from sam2.modeling.sam2_base import NO_OBJ_SCORE, SAM2Base
from sam2.modeling.sam2_utils import get_1d_sine_pe

from .hiera_windows import WindowPositions, trunk_features
from .memory_conditioning import Memory, attend_memories
from .mv_moe import FUSIONS, MV_MoE, fuse


@dataclass
class ViewFeatures:
    """Backbone output of one view, in the layouts the SAM 2 heads consume."""

    feat: torch.Tensor  # stride-16 feature, sequence-first [HW, B, C]
    pos: torch.Tensor  # its sine position encoding [HW, B, C]
    high_res: list[torch.Tensor]  # decoder skip features [B, C/8, 4h, 4w], [B, C/4, 2h, 2w]
    size: tuple[int, int]  # (h, w) of the stride-16 grid

    def as_map(self) -> torch.Tensor:
        """The stride-16 feature as [B, C, h, w]."""
        h, w = self.size
        return self.feat.permute(1, 2, 0).reshape(self.feat.shape[1], -1, h, w)

    def expand(self, batch: int) -> "ViewFeatures":
        """One image's features as a batch of `batch` identical rows, without copies.

        Several targets on one image share its encoding: every per-target head (memory attention,
        memory encoder, decoder) then runs once over the batch of targets.
        """
        if batch == self.feat.shape[1]:
            return self
        return ViewFeatures(
            feat=self.feat.expand(-1, batch, -1),
            pos=self.pos.expand(-1, batch, -1),
            high_res=[f.expand(batch, -1, -1, -1) for f in self.high_res],
            size=self.size,
        )

    def split(self) -> list["ViewFeatures"]:
        """One ViewFeatures per image of a batch (contiguous copies, as a batch of one has)."""
        return [
            ViewFeatures(
                feat=self.feat[:, i:i + 1].contiguous(),
                pos=self.pos[:, i:i + 1].contiguous(),
                high_res=[f[i:i + 1] for f in self.high_res],
                size=self.size,
            )
            for i in range(self.feat.shape[1])
        ]


@dataclass
class MaskPrediction:
    """One decoder call: SAM 2's `_forward_sam_heads` outputs for the chosen mask."""

    low_res: torch.Tensor  # [B, 1, 4h, 4w] float32 logits, NO_OBJ_SCORE everywhere when absent
    high_res: torch.Tensor  # [B, 1, S, S] bilinear upsample of `low_res` to the model input size
    iou: torch.Tensor  # [B] predicted IoU of the chosen mask
    score_logit: torch.Tensor  # [B, 1] object-existence logit
    obj_ptr: torch.Tensor  # [B, C] object pointer (no_obj_ptr when absent)


class LMEEC(SAM2Base):
    """SAM 2 + Memory-View MoE: the LM-EEC network with the official parameter names."""

    def __init__(self, *args, fusion: str = "moe", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {fusion!r}; expected one of {FUSIONS}")
        self.fusion = fusion
        self.MV_MoE = MV_MoE(self.hidden_dim)  # noqa: N815 - official state-dict name
        self.window_positions = WindowPositions(self.image_encoder.trunk)
        self.trunk_features = trunk_features  # the tracker may swap in a torch.compile'd version

    def encode_image(self, images: torch.Tensor, unpadded_windows: bool = False) -> ViewFeatures:
        """Run the image encoder once on normalised [B, 3, S, S] images.

        SAM 2's `forward_image`, with the trunk run by `hiera_windows` (bit-identical to SAM 2's
        unless `unpadded_windows`, a faster variant that differs by float rounding).
        """
        encoder = self.image_encoder
        stages = self.trunk_features(encoder.trunk, self.window_positions, images, unpadded_windows)
        fpn, fpn_pos = encoder.neck(stages)
        if encoder.scalp > 0:
            fpn, fpn_pos = fpn[:-encoder.scalp], fpn_pos[:-encoder.scalp]
        if self.use_high_res_features_in_sam:
            fpn[0] = self.sam_mask_decoder.conv_s0(fpn[0])
            fpn[1] = self.sam_mask_decoder.conv_s1(fpn[1])
        backbone_out = {"vision_features": fpn[-1], "vision_pos_enc": fpn_pos, "backbone_fpn": fpn}
        _, feats, pos, sizes = self._prepare_backbone_features(backbone_out)
        batch = images.shape[0]
        high_res = [
            f.permute(1, 2, 0).reshape(batch, -1, *s) for f, s in zip(feats[:-1], sizes[:-1])
        ]
        return ViewFeatures(feat=feats[-1], pos=pos[-1], high_res=high_res, size=sizes[-1])

    def encode_memory(
        self, view: ViewFeatures, mask_logits: torch.Tensor, score_logit: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory features [B, mem_dim, h, w] and their position encoding for one view.

        `mask_logits` is [B, 1, S, S]. Binary source masks are passed as they are, which the
        official code does too: they become 20*sigmoid(m)-10, i.e. {0, 4.62}, not {-10, 10}.
        """
        feats, pos = self._encode_new_memory(
            current_vision_feats=[view.feat],
            feat_sizes=[view.size],
            pred_masks_high_res=mask_logits,
            object_score_logits=score_logit,
            is_mask_from_pts=False,
        )
        return feats, pos[-1]

    def condition(
        self,
        view: ViewFeatures,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        num_pointer_tokens: int = 0,
    ) -> torch.Tensor:
        """Memory attention of a view's tokens over `memory` ([L, B, mem_dim]); returns [B, C, h, w]."""
        out = self.memory_attention(
            curr=[view.feat],
            curr_pos=[view.pos],
            memory=memory,
            memory_pos=memory_pos,
            num_obj_ptr_tokens=num_pointer_tokens,
        )
        return self._as_map(out, view.size)

    def condition_many(self, view: ViewFeatures, memories: list[Memory]) -> list[torch.Tensor]:
        """`condition(view, memory, memory_pos, pointer_tokens)` for each memory, bit-identically.

        Inference only: the passes share their first self-attention and rotate keys in place
        (`memory_conditioning`). Returns one [B, C, h, w] map per memory.
        """
        outputs = attend_memories(self.memory_attention, view.feat, view.pos, memories)
        return [self._as_map(out, view.size) for out in outputs]

    def _as_map(self, tokens: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Sequence-first [hw, B, C] -> [B, C, h, w]."""
        return tokens.permute(1, 2, 0).reshape(tokens.shape[1], self.hidden_dim, *size)

    def temporal_encoding(self, slot: int) -> torch.Tensor:
        """Learned temporal encoding `maskmem_tpos_enc[slot]`, [1, 1, mem_dim]."""
        return self.maskmem_tpos_enc[slot]

    def pointer_memory(
        self, pointers: list[tuple[int, torch.Tensor]], max_distance: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Object pointers [(frame distance, [B, C])] as memory tokens and their encodings.

        Exactly SAM 2's non-conditioning pointer path: sine encoding of distance/max_distance,
        projected to mem_dim, each C-wide pointer split into C/mem_dim tokens.
        """
        distances, ptrs = zip(*pointers)
        obj_ptrs = torch.stack(ptrs, dim=0)  # [P, B, C]
        batch, channels = obj_ptrs.shape[1], self.hidden_dim
        rel = torch.tensor(distances, device=obj_ptrs.device) / max_distance
        obj_pos = self.obj_ptr_tpos_proj(get_1d_sine_pe(rel, dim=channels))
        obj_pos = obj_pos.unsqueeze(1).expand(-1, batch, self.mem_dim)
        if self.mem_dim < channels:
            split = channels // self.mem_dim
            obj_ptrs = obj_ptrs.reshape(-1, batch, split, self.mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
            obj_pos = obj_pos.repeat_interleave(split, dim=0)
        return obj_ptrs, obj_pos

    def fuse(self, memory_fused: torch.Tensor | None, view_guided: torch.Tensor) -> torch.Tensor:
        """Combine F_mem and F_view with the configured fusion (MV-MoE by default)."""
        return fuse(self.fusion, self.MV_MoE, memory_fused, view_guided)

    def no_memory_embedding(self, view: ViewFeatures) -> torch.Tensor:
        """SAM 2's image embedding for a prompt frame without memory: feature + no_mem_embed."""
        h, w = view.size
        feat = view.feat + self.no_mem_embed
        return feat.permute(1, 2, 0).reshape(feat.shape[1], self.hidden_dim, h, w)

    def segment_prompt(self, view: ViewFeatures, coords: torch.Tensor, labels: torch.Tensor) -> MaskPrediction:
        """SAM 2 segmentation of a box or clicks on a prompt frame (no memory yet).

        One click is ambiguous (a part or the whole), so it takes the best of SAM's three outputs by
        predicted IoU, as SAM 2's predictor does; a box or several clicks take the single output.
        """
        multimask = bool((labels < 2).all()) and labels.shape[1] == 1
        return self.predict_mask(self.no_memory_embedding(view), view, coords, labels, multimask)

    def predict_mask(
        self,
        image_embedding: torch.Tensor,
        view: ViewFeatures,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        multimask: bool = False,
    ) -> MaskPrediction:
        """SAM 2's `_forward_sam_heads` without the dense prompt (the official LM-EEC decoder).

        Points are in model-input pixels ([B, N, 2]); labels 1/0 for clicks, 2/3 for box corners.
        With `multimask` the best of the three multimask outputs is chosen by predicted IoU.
        """
        batch, device = image_embedding.shape[0], image_embedding.device
        if point_coords is None:
            point_coords = torch.zeros(batch, 1, 2, device=device)
            point_labels = -torch.ones(batch, 1, dtype=torch.int32, device=device)
        sparse, _ = self.sam_prompt_encoder(points=(point_coords, point_labels), boxes=None, masks=None)
        masks, ious, tokens, score_logit = self.sam_mask_decoder(
            image_embeddings=image_embedding,
            image_pe=self.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=torch.zeros_like(image_embedding),
            multimask_output=multimask,
            repeat_image=False,
            high_res_features=view.high_res,
        )
        present = score_logit > 0
        masks = torch.where(present[:, None, None], masks, NO_OBJ_SCORE).float()
        token = tokens[:, 0]
        if multimask:
            best = torch.argmax(ious, dim=-1)
            rows = torch.arange(batch, device=device)
            masks, ious = masks[rows, best].unsqueeze(1), ious[rows, best].unsqueeze(1)
            if tokens.shape[1] > 1:
                token = tokens[rows, best]
        high_res = F.interpolate(
            masks, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
        )
        obj_ptr = self.obj_ptr_proj(token)
        weight = present.float()
        if self.fixed_no_obj_ptr:
            obj_ptr = weight * obj_ptr
        obj_ptr = obj_ptr + (1 - weight) * self.no_obj_ptr
        return MaskPrediction(masks, high_res, ious[:, 0], score_logit, obj_ptr)
