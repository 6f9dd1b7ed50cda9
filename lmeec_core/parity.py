"""`lmeec parity`: run the official LM-EEC protocol on a fixture and compare with its reference outputs.

A fixture folder (format: shared/fixtures/README.md) holds `model.yaml`, `checkpoint.pt`,
`annotation.json` (processed-EgoExo4D masks) and `frames/<cam>/<frame>.{png,jpg}`, optionally
`meta.json` (direction, cameras) and `outputs.npz` (the official code's arrays). The run goes
through the streaming `CorrespondenceTracker` in its official configuration, so parity proves the
tracker itself; intermediate arrays are collected with the tracker's probe.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .data.takes import decode_mask, natural_key
from .errors import InputError
from .memory import BankView
from .model import load_checkpoint, load_config_file
from .preprocess import image_to_tensor
from .tracker import OFFICIAL, CorrespondenceTracker

DIRECTIONS = ("ego2exo", "exo2ego")


@dataclass
class Fixture:
    """One take/object/direction of a parity fixture, resolved to the official frame list."""

    root: Path
    source_cam: str
    target_cam: str
    object_name: str
    frames: list[str]
    source_rles: dict[str, dict]
    meta: dict[str, Any]

    @classmethod
    def read(cls, root: str | Path, direction: str | None = None, object_name: str | None = None) -> "Fixture":
        root = Path(root)
        for required in ("model.yaml", "checkpoint.pt", "annotation.json", "frames"):
            if not (root / required).exists():
                raise InputError(f"fixture {root} has no {required}; expected model.yaml, checkpoint.pt, "
                                 "annotation.json and frames/<cam>/")
        meta = json.loads((root / "meta.json").read_text()) if (root / "meta.json").exists() else {}
        masks = json.loads((root / "annotation.json").read_text())["masks"]
        object_name = object_name or meta.get("object_name") or next(iter(masks))
        cams = sorted(p.name for p in (root / "frames").iterdir() if p.is_dir())
        aria = [c for c in cams if "aria" in c]
        exo = [c for c in cams if "aria" not in c]
        if not aria or not exo:
            raise InputError(f"fixture {root} needs an Aria camera (name containing 'aria') and an exo camera "
                             f"under frames/; found {cams}")
        direction = direction or meta.get("direction", "ego2exo")
        if direction not in DIRECTIONS:
            raise InputError(f"direction {direction!r}; expected one of {DIRECTIONS}")
        if direction == meta.get("direction") and "source_cam" in meta:
            source, target = meta["source_cam"], meta["target_cam"]
        else:
            source, target = (aria[-1], exo[0]) if direction == "ego2exo" else (exo[0], aria[-1])
        images = {p.stem for p in (root / "frames" / source).iterdir()}
        frames = sorted(set(masks[object_name][target]) & images, key=natural_key)
        return cls(root, source, target, object_name, frames, masks[object_name].get(source, {}), meta)

    def image(self, cam: str, frame: str) -> np.ndarray:
        path = next((self.root / "frames" / cam).glob(f"{frame}.*"))
        return np.asarray(Image.open(path).convert("RGB"))

    def source_mask(self, frame: str) -> np.ndarray:
        """Source mask at annotation resolution; a frame without annotation counts as empty."""
        rle = self.source_rles.get(frame)
        if rle is None:
            return np.zeros((1, 1), bool)
        return decode_mask(rle)


class _Recorder:
    """Collects the tracker's intermediate values, frame by frame, as numpy arrays."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.current: dict[str, Any] = {}

    def __call__(self, name: str, value: Any) -> None:
        self.current[name] = value
        if name == "prediction":
            self.frames.append(self.current)
            self.current = {}


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def run_official(fixture: Fixture, threads: int | None = None,
                 speedups: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Run the official protocol; returns the arrays of the fixture format.

    Without `speedups` this is the official mode, bit-compatible in fp32; with them it checks that
    the named speed-ups stay within the fixture's tolerances.
    """
    if threads:
        torch.set_num_threads(threads)
    model, _ = load_checkpoint(fixture.root / "checkpoint.pt", config=load_config_file(fixture.root / "model.yaml"))
    size = model.image_size
    recorder = _Recorder()
    config = replace(OFFICIAL, pointer_frames=len(fixture.frames), speedups=speedups)
    tracker = CorrespondenceTracker(model, config, probe=recorder)
    src_view = "ego" if "aria" in fixture.source_cam else "exo"
    processed, resized = [], {"src": [], "tgt": []}
    for t, frame in enumerate(fixture.frames):
        src_img, tgt_img = fixture.image(fixture.source_cam, frame), fixture.image(fixture.target_cam, frame)
        for key, img in (("src", src_img), ("tgt", tgt_img)):
            resized[key].append(image_to_tensor(img, size, torch.device("cpu"))[1])
        mask = fixture.source_mask(frame)
        if not mask.any():
            if tracker.has_target:
                tracker.step(*_pair(src_view, src_img, tgt_img), source_mask=np.zeros(src_img.shape[:2], bool))
            continue
        if tracker.has_target:
            tracker.step(*_pair(src_view, src_img, tgt_img), source_mask=mask)
        else:
            tracker.set_target(src_view, *_pair(src_view, src_img, tgt_img), mask=mask)
        processed.append(t)
    return _arrays(recorder.frames, processed, resized, src_view, size)


def _pair(src_view: str, src_img: np.ndarray, tgt_img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ego, exo) images from (source, target) roles."""
    return (src_img, tgt_img) if src_view == "ego" else (tgt_img, src_img)


def _arrays(frames: list[dict[str, Any]], processed: list[int], resized: dict[str, list[np.ndarray]],
            src_view: str, size: int) -> dict[str, np.ndarray]:
    """Assemble the fixture-format arrays from the recorded frames."""
    tgt_view = "exo" if src_view == "ego" else "ego"
    preds = [f["prediction"].prediction for f in frames]
    low = np.stack([_np(p.low_res[0, 0]) for p in preds])
    high = np.stack([_np(p.high_res[0, 0]) for p in preds])
    out = {
        "processed_frame_index": np.array(processed, np.int32),
        "low_res_logits": low,
        "object_score_logit": np.array([float(p.score_logit) for p in preds], np.float32),
        "iou_pred": np.array([float(p.iou) for p in preds], np.float32),
        "obj_ptr": np.stack([_np(p.obj_ptr[0]) for p in preds]),
        "mask_image_size": (high > 0).astype(np.uint8),
        "tgt_maskmem_features": np.stack([_np(f["target_memory"][0]) for f in frames]),
        "src_maskmem_features": np.stack([_np(f["source_memory"][0]) for f in frames]),
        "src_mask_image_size": np.stack([_np(f["source_mask_model"][0, 0]) for f in frames]).astype(np.uint8),
        "bank_len": np.array([f["prediction"].bank_lens[0] for f in frames], np.int32),
        "num_ptr_tokens": np.array([f["prediction"].pointer_tokens[0] for f in frames], np.int32),
        "src_img_resized": np.stack(resized["src"]),
        "tgt_img_resized": np.stack(resized["tgt"]),
    }
    if frames:
        grid = frames[0]["memory_pos"].shape[0]
        out["memory_tokens_F_mem"] = (2 * out["bank_len"] * grid + out["num_ptr_tokens"]).astype(np.int32)
        g = int(round(grid ** 0.5))
        out["maskmem_pos_enc"] = _np(frames[0]["memory_pos"][:, 0].t().reshape(-1, g, g))
        out.update(_debug_features(frames[0], processed[0], src_view, tgt_view))
        out.update(_fusion_features(frames, processed))
        out.update(_compressions(frames, processed))
    return out


def _debug_features(frame: dict[str, Any], index: int, src_view: str, tgt_view: str) -> dict[str, np.ndarray]:
    src, tgt = frame[f"{src_view}_features"], frame[f"{tgt_view}_features"]
    return {
        "debug_feat_frame_index": np.array([index], np.int32),
        "debug_src_feat16": _np(src.as_map()),
        "debug_tgt_feat16": _np(tgt.as_map()),
        "debug_tgt_feat_s0": _np(tgt.high_res[0]),
        "debug_tgt_feat_s1": _np(tgt.high_res[1]),
        "debug_tgt_pos16": _np(tgt.pos.permute(1, 2, 0).reshape(1, -1, *tgt.size)),
    }


def _fusion_features(frames: list[dict[str, Any]], processed: list[int]) -> dict[str, np.ndarray]:
    """F_view / F_mem / fused of every processed frame that had memory (F_mem exists)."""
    with_memory = [(t, f) for t, f in zip(processed, frames) if f["F_mem"] is not None]
    if not with_memory:
        return {}
    return {
        "debug_frame_index": np.array([t for t, _ in with_memory], np.int32),
        "F_view": np.concatenate([_np(f["F_view"]) for _, f in with_memory]),
        "F_mem": np.concatenate([_np(f["F_mem"]) for _, f in with_memory]),
        "fused": np.concatenate([_np(f["fused"]) for _, f in with_memory]),
    }


def _stack_bank(entries: list[torch.Tensor]) -> np.ndarray:
    """[N, 1, C] bank entries -> [T, N, C] (the fixture's layout)."""
    return np.stack([_np(e[:, 0]) for e in entries])


def _compressions(frames: list[dict[str, Any]], processed: list[int]) -> dict[str, np.ndarray]:
    """k* of every compression, and the banks around the first one ([T, N, C], oldest first)."""
    banks: list[BankView] = [f["banks"][0] for f in frames]  # the probe gives one per target; parity has one
    events = [i for i, bank in enumerate(banks) if bank.kstar is not None]
    if not events:
        return {}
    first = events[0]
    before = frames[first - 1]
    previous = banks[first - 1]
    appended_src = before["source_memory"].flatten(2).permute(2, 0, 1)
    appended_tgt = before["target_memory"].flatten(2).permute(2, 0, 1)
    after = banks[first]
    return {
        "compress_frame_index": np.array([processed[i] for i in events], np.int32),
        "compress_kstar_src": np.stack([banks[i].kstar[0][0].numpy() for i in events]).astype(np.uint8),
        "compress_kstar_tgt": np.stack([banks[i].kstar[1][0].numpy() for i in events]).astype(np.uint8),
        "bank_src_before_first_compression": _stack_bank([*previous.source, appended_src]),
        "bank_tgt_before_first_compression": _stack_bank([*previous.target, appended_tgt]),
        "bank_src_after_first_compression": _stack_bank(after.source),
        "bank_tgt_after_first_compression": _stack_bank(after.target),
    }


# Tolerances of shared/fixtures/README.md for a faithful fp32 reimplementation.
FLOAT_TARGET, FLOAT_LIMIT = 1e-4, 1e-3
SCORE_LIMIT = 1e-3
MASK_AGREEMENT = 0.999
LOGIT_NEAR_ZERO = 1e-3
EXACT = ("processed_frame_index", "bank_len", "num_ptr_tokens", "memory_tokens_F_mem", "src_mask_image_size",
         "src_img_resized", "tgt_img_resized", "debug_frame_index", "debug_feat_frame_index", "compress_frame_index")


def align_to_reference(outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Keep F_view/F_mem/fused only for the frames the reference recorded them on."""
    if "debug_frame_index" not in reference or "debug_frame_index" not in outputs:
        return outputs
    wanted = list(reference["debug_frame_index"])
    have = list(outputs["debug_frame_index"])
    rows = [have.index(t) for t in wanted if t in have]
    aligned = dict(outputs)
    aligned["debug_frame_index"] = outputs["debug_frame_index"][rows]
    for key in ("F_view", "F_mem", "fused"):
        aligned[key] = outputs[key][rows]
    return aligned


def compare(outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, Any]:
    """Check every reference array against the fixture's tolerances; returns a JSON-able report."""
    checks: dict[str, dict[str, Any]] = {}
    for key in reference.files if hasattr(reference, "files") else reference:
        ref = np.asarray(reference[key])
        ours = outputs.get(key)
        if ours is None or ours.shape != ref.shape:
            checks[key] = {"ok": False, "why": f"shape {None if ours is None else ours.shape} vs reference {ref.shape}"}
            continue
        diff = float(np.abs(ours.astype(np.float64) - ref.astype(np.float64)).max()) if ref.size else 0.0
        checks[key] = {"max_abs_diff": diff, "ok": _within(key, diff, ours, ref)}
    checks["low_res_logits"].update(_no_object_check(outputs, reference))
    checks["mask_image_size"].update(_mask_check(outputs, reference))
    return {"ok": all(c["ok"] for c in checks.values()), "checks": checks}


def _within(key: str, diff: float, ours: np.ndarray, ref: np.ndarray) -> bool:
    if key in EXACT:
        return diff == 0.0
    if key.startswith("compress_kstar"):
        return True  # near ties may flip (README); the banks and logits checks bound their effect
    if key == "object_score_logit":
        return diff <= SCORE_LIMIT and bool((np.sign(ours) == np.sign(ref)).all())
    if key == "mask_image_size":
        return True  # judged by _mask_check
    return diff <= FLOAT_LIMIT


def _no_object_check(outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, Any]:
    """Frames the reference gates to -1024 must be exactly -1024 here too."""
    ref, ours = reference["low_res_logits"], outputs["low_res_logits"]
    gated = ref == -1024.0
    exact = bool((ours[gated] == -1024.0).all())
    return {"gated_exact": exact, "ok": exact and float(np.abs(ours - ref).max()) <= FLOAT_LIMIT}


def _mask_check(outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, Any]:
    ref_low = torch.from_numpy(np.asarray(reference["low_res_logits"]))[:, None]
    size = reference["mask_image_size"].shape[-1]
    ref_up = F.interpolate(ref_low, size=(size, size), mode="bilinear", align_corners=False)[:, 0].numpy()
    differ = outputs["mask_image_size"] != reference["mask_image_size"]
    agreement = 1.0 - float(differ.mean())
    near_zero_only = bool((np.abs(ref_up[differ]) < LOGIT_NEAR_ZERO).all())
    return {"agreement": agreement, "mismatched_pixels": int(differ.sum()),
            "ok": agreement >= MASK_AGREEMENT and near_zero_only}


def run_parity(fixture_dir: str | Path, out_path: str | Path, direction: str | None = None,
               threads: int | None = 2, speedups: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run a fixture, write its arrays to `out_path` (.npz) and compare them when a reference exists."""
    fixture = Fixture.read(fixture_dir, direction)
    outputs = run_official(fixture, threads, speedups)
    reference_path = Path(fixture_dir) / "outputs.npz"
    report: dict[str, Any] = {"fixture": str(fixture_dir), "source_cam": fixture.source_cam,
                              "target_cam": fixture.target_cam, "frames": len(fixture.frames),
                              "processed": int(len(outputs["processed_frame_index"])),
                              "speedups": list(speedups)}
    if reference_path.exists():
        reference = np.load(reference_path)
        outputs = align_to_reference(outputs, reference)
        report.update(compare(outputs, reference))
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_path, **outputs)
    report["written"] = str(out_path)
    return report
