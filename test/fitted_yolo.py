"""A YOLO11n-seg built by Ultralytics from its model YAML (no download), fitted to CamVid's training
frames, and exported by Ultralytics' own ONNX exporter: the model users of yolo_ros have, with
activations that change with the input.

Fitting takes about ten minutes on 2 cores (a few hundred steps move Ultralytics' class prior), more
than a CI run can spend, so its weights are kept in the repository (``FITTED_WEIGHTS``, fp16
safetensors, 6 MB) and the tests build the network from the YAML and load them; ``python
test/fitted_yolo.py`` fits them again (the command and its figures are in docs/benchmarks.md).

Ultralytics (AGPL-3.0) is a test-only dependency: the product never imports it. Instances are the
connected components of CamVid's Car and Pedestrian pixels (as ``fitted_models`` makes them for
Mask R-CNN), written as Ultralytics' polygon labels with COCO's class indices, so the model keeps
COCO's 80 outputs and publishes through the coco_things label set.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import yaml

from shared_data import SHARED_DATA

CAMVID_TRAIN = SHARED_DATA / 'camvid'
# CamVid (SegNet's 11 classes) -> COCO class index (Ultralytics' order)
COCO_CLASS_OF_CAMVID = {8: 2, 9: 0}  # Car -> car, Pedestrian -> person
MIN_COMPONENT_PIXELS = 60
FIT_IMAGE_SIZE = 320
FITTED_WEIGHTS = Path(__file__).resolve().parent / 'data' / 'yolo11n-seg_camvid_fitted.safetensors'
MODEL_YAML = 'yolo11n-seg.yaml'


def ultralytics_offline() -> None:
    """Nothing reaches the network: no settings sync, no font or weights downloads."""
    os.environ.setdefault('YOLO_OFFLINE', '1')
    os.environ.setdefault('YOLO_VERBOSE', 'False')


def write_yolo_dataset(folder: Path, frames: int) -> Path:
    """The first ``frames`` CamVid training frames as an Ultralytics segmentation dataset; its YAML."""
    from seg_models.data.labels import get_label_set

    images, labels = folder / 'images' / 'train', folder / 'labels' / 'train'
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    for image_path in sorted((CAMVID_TRAIN / 'train').glob('*.png'))[:frames]:
        image = cv2.imread(str(image_path))
        label = cv2.imread(str(CAMVID_TRAIN / 'trainannot' / image_path.name), cv2.IMREAD_UNCHANGED)
        height, width = label.shape
        lines = []
        for camvid_class, coco_class in COCO_CLASS_OF_CAMVID.items():
            count, components = cv2.connectedComponents((label == camvid_class).astype(np.uint8))
            for component in range(1, count):
                region = (components == component).astype(np.uint8)
                if region.sum() < MIN_COMPONENT_PIXELS:
                    continue
                contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
                polygon = max(contours, key=cv2.contourArea).reshape(-1, 2)
                if len(polygon) < 3:
                    continue
                points = ' '.join(f'{x / width:.5f} {y / height:.5f}' for x, y in polygon)
                lines.append(f'{coco_class} {points}')
        cv2.imwrite(str(images / image_path.name), image)
        (labels / f'{image_path.stem}.txt').write_text('\n'.join(lines) + '\n')
    names = dict(enumerate(get_label_set('coco_things').names))
    data = folder / 'camvid_instances.yaml'
    data.write_text(yaml.safe_dump({'path': str(folder), 'train': 'images/train', 'val': 'images/train',
                                    'names': names}))
    return data


def fit_yolo_seg(folder: Path, epochs: int = 50, frames: int = 64, seed: int = 0) -> Path:
    """yolo11n-seg from its YAML, fitted on the CPU; the weights file Ultralytics wrote."""
    ultralytics_offline()
    from ultralytics import YOLO

    data = write_yolo_dataset(folder / 'data', frames)
    model = YOLO(MODEL_YAML)
    # Ultralytics starts every class score near 1e-4, a prior thousands of steps move: the classes fitted
    # here start near 0.05 instead, so that a few hundred steps separate cars and people from the rest
    model.add_callback('on_pretrain_routine_end', _start_fitted_classes_higher)
    # the weights saved are the EMA's, which over a few dozen steps stay the initial ones: saved as trained
    model.add_callback('on_train_epoch_end', lambda trainer: trainer.ema.ema.load_state_dict(
        trainer.model.state_dict()))
    model.train(data=str(data), epochs=epochs, imgsz=FIT_IMAGE_SIZE, batch=8, workers=0, device='cpu', seed=seed,
                deterministic=True, plots=False, val=False, amp=False, project=str(folder / 'runs'), name='fit',
                exist_ok=True, verbose=False, mosaic=0.0, close_mosaic=0, warmup_epochs=0, optimizer='AdamW',
                lr0=0.002, nbs=8)  # nbs: one optimiser step per batch (Ultralytics accumulates to 64)
    return folder / 'runs' / 'fit' / 'weights' / 'last.pt'


def _start_fitted_classes_higher(trainer) -> None:
    import torch

    with torch.no_grad():
        for branch in trainer.model.model[-1].cv3:
            branch[-1].bias[list(COCO_CLASS_OF_CAMVID.values())] = -3.0


def save_fitted_weights(weights: Path, path: Path = FITTED_WEIGHTS) -> Path:
    """The fitted network's state dict (fp16 safetensors) from the weights file Ultralytics wrote."""
    import torch
    from safetensors.torch import save_file

    checkpoint = torch.load(weights, map_location='cpu', weights_only=False)  # Ultralytics' own file, ours
    network = checkpoint.get('ema') or checkpoint['model']
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({name: tensor.half().contiguous() for name, tensor in network.state_dict().items()}, str(path))
    return path


def fitted_yolo(path: Path = FITTED_WEIGHTS):
    """yolo11n-seg built from its YAML with the fitted weights: an Ultralytics YOLO object."""
    ultralytics_offline()
    from safetensors.torch import load_file
    from ultralytics import YOLO

    model = YOLO(MODEL_YAML, task='segment')
    model.model.load_state_dict({name: tensor.float() for name, tensor in load_file(str(path)).items()})
    return model


def export_yolo_onnx(model, input_size: tuple[int, int], folder: Path) -> Path:
    """Ultralytics' own ONNX export of ``model`` at ``input_size`` (height, width) and the metadata
    file our instance node reads it with; the metadata's path."""
    folder.mkdir(parents=True, exist_ok=True)
    exported = Path(model.export(format='onnx', imgsz=list(input_size), simplify=False, dynamic=False))
    onnx_path = folder / f'yolo11n-seg_{input_size[0]}x{input_size[1]}.onnx'
    exported.replace(onnx_path)
    metadata = folder / f'{onnx_path.stem}.yaml'
    metadata.write_text(yaml.safe_dump({'onnx': onnx_path.name, 'format': 'ultralytics_seg',
                                        'label_set': 'coco_things'}))
    return metadata


if __name__ == '__main__':
    import argparse
    import tempfile
    import time

    parser = argparse.ArgumentParser(description='fit yolo11n-seg on CamVid again and keep its weights')
    parser.add_argument('--epochs', type=int, default=50)
    parser.add_argument('--frames', type=int, default=64)
    parser.add_argument('--output', type=Path, default=FITTED_WEIGHTS)
    arguments = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        fitted = fit_yolo_seg(Path(folder), arguments.epochs, arguments.frames)
        print(f'fitted in {time.perf_counter() - started:.0f} s: {save_fitted_weights(fitted, arguments.output)}')
