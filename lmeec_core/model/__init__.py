"""The LM-EEC network on the PyPI `sam2` modules: presets, builder, MV-MoE, checkpoint I/O."""
from .builder import build_model, build_preset
from .checkpoint import FORMAT, LoadReport, load_checkpoint, save_checkpoint
from .lmeec import LMEEC, MaskPrediction, ViewFeatures
from .mv_moe import FUSIONS, MV_MoE
from .presets import PRESETS, load_config_file, preset_config

__all__ = [
    "FORMAT", "FUSIONS", "LMEEC", "LoadReport", "MV_MoE", "MaskPrediction", "PRESETS", "ViewFeatures",
    "build_model", "build_preset", "load_checkpoint", "load_config_file", "preset_config", "save_checkpoint",
]
