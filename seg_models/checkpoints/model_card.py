"""Model cards: what a weights file was trained for (task, architecture, label set, input size, data,
licence, validation), carried in the safetensors file's own metadata so it travels with the weights.

``seg-models train`` writes them; a segmenter reads them to run the weights as they were trained
(``resolved_semantic_config``), and the shipped demo model is one.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from importlib import resources
from pathlib import Path
from typing import Optional

from seg_models.checkpoints.formats import mmseg_settings
from seg_models.checkpoints.fixed_settings import apply_fixed_settings
from seg_models.checkpoints.named import resolved_named_checkpoint
from seg_models.checkpoints.reading import read_checkpoint_meta
from seg_models.configs import SemanticModelConfig

LOGGER = logging.getLogger(__name__)
MODEL_CARD_KEY = 'seg_models.model_card'
DEMO_WEIGHTS_NAME = 'deeplabv3plus_mobilenet_v3_large_camvid.safetensors'
DEMO_NOTICE = ('DEMO MODEL: DeepLabv3+ MobileNetV3 trained by seg-models train on CamVid (11 classes, 367 frames). '
               'Its licence is CamVid\'s, CC BY-NC 4.0 (non-commercial use only). A demo of the pipeline, not a '
               'driving model: pass a checkpoint for real use.')


def read_model_card(path: str | Path) -> dict:
    """The model card in a safetensors file's metadata ({} for other files or none)."""
    path = Path(path)
    if path.suffix != '.safetensors' or not path.is_file():
        return {}
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework='pt') as weights:
            metadata = weights.metadata() or {}
        return json.loads(metadata.get(MODEL_CARD_KEY, '{}'))
    except (SafetensorError, OSError, ValueError):
        return {}


DEMO_MODEL_ENV = 'SEG_MODELS_DEMO_MODEL'


def demo_weights() -> Optional[Path]:
    """The weights a semantic model without a checkpoint runs: the demo model shipped in the package
    (seg_models/data/weights), or the file ``$SEG_MODELS_DEMO_MODEL`` names; set empty, None (the
    network is then untrained, as with any other settings)."""
    chosen = os.environ.get(DEMO_MODEL_ENV)
    if chosen is not None:
        return Path(chosen) if chosen else None
    return Path(str(resources.files('seg_models.data') / 'weights' / DEMO_WEIGHTS_NAME))


def is_demo_weights(path: str | Path) -> bool:
    demo = demo_weights()
    return bool(path) and demo is not None and Path(path).resolve() == demo.resolve()


def resolved_semantic_config(config: SemanticModelConfig) -> SemanticModelConfig:
    """``config`` with what its weights' model card fixes filled in.

    No checkpoint, no bring-your-own model and the default architecture and label set: the shipped
    demo model. Settings left at their defaults take the card's values (label set, network input
    size, output stride); a setting given otherwise that contradicts the card is refused in one line.
    """
    defaults = SemanticModelConfig()
    if config.model_metadata:
        return config
    if not config.checkpoint:
        demo = demo_weights()
        if not (demo is not None and demo.is_file() and (config.architecture, config.output_stride, config.label_set) ==
                (defaults.architecture, defaults.output_stride, defaults.label_set)):
            return config  # untrained, as asked (said loudly where the network is built)
        config = dataclasses.replace(config, checkpoint=str(demo))
    config = resolved_named_checkpoint(config, 'semantic')
    card, source = read_model_card(config.checkpoint), 'its model card'
    if not card:
        card, source = mmseg_settings(read_checkpoint_meta(config.checkpoint), Path(config.checkpoint).name)
    fixed = {name: card[name] for name in ('label_set', 'output_stride', 'architecture', 'input_size')
             if card.get(name)}
    return apply_fixed_settings(config, fixed, config.checkpoint, source)
