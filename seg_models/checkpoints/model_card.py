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
from seg_models.checkpoints.reading import CheckpointError, read_checkpoint_meta
from seg_models.configs import DEFAULT_INPUT_SIZE, SemanticModelConfig

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
    card, source = read_model_card(config.checkpoint), 'its model card'
    if not card:
        card, source = mmseg_settings(read_checkpoint_meta(config.checkpoint), Path(config.checkpoint).name)
    if not card:
        return config
    changes = {}
    for name, card_value, default in (('label_set', card.get('label_set'), defaults.label_set),
                                      ('output_stride', card.get('output_stride'), defaults.output_stride),
                                      ('architecture', card.get('architecture'), defaults.architecture)):
        value = getattr(config, name)
        if card_value is None or value == card_value:
            continue
        if value != default or name == 'architecture':
            raise CheckpointError(f'checkpoint {config.checkpoint} was trained as {name} {card_value} ({source}), '
                                  f'but {name} is {value}: leave {name} unset or set it to {card_value}')
        LOGGER.info('checkpoint %s: %s %s (%s)', config.checkpoint, name, card_value, source)
        changes[name] = card_value
    if card.get('input_size') and config.input_size == DEFAULT_INPUT_SIZE:
        changes['input_size'] = tuple(card['input_size'])  # the size it was trained for, unless set otherwise
    return dataclasses.replace(config, **changes)
