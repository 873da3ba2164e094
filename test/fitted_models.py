"""Networks fitted for a few minutes to ../shared's CamVid frames, for the precision checks.

Untrained weights give near-constant outputs, against which fp16 and int8 always "agree". These
networks have seen real driving frames, so their activations have realistic ranges and their
answers change with the input: a DeepLabv3+ MobileNetV3 on CamVid's 11 classes, and a Mask R-CNN
R50-FPN on instances taken as connected components of CamVid's Car and Pedestrian pixels. Both
train at low resolution from a fixed seed, on the CPU, and are saved as the checkpoints a user
would pass. On a GPU machine they train there (``device``), in seconds.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from shared_data import SHARED_DATA

CAMVID = SHARED_DATA / 'camvid_seq05vd'
FIT_SIZE = (192, 256)  # (height, width): CamVid's 360x480 at about half, multiples of 32
CAMVID_VOID = 11
# CamVid class -> cityscapes_things class index in the network (0 is background)
INSTANCE_CLASSES = {8: 3, 9: 1}  # Car -> car, Pedestrian -> person
MIN_INSTANCE_PIXELS = 40


def fit_device() -> str:
    """Where the networks train: the GPU where PyTorch sees one, else the CPU."""
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def camvid_available() -> bool:
    return (CAMVID / 'images').is_dir() and (CAMVID / 'labels').is_dir()


def camvid_frames(size: tuple[int, int] = FIT_SIZE) -> list[tuple[np.ndarray, np.ndarray]]:
    """(RGB image, CamVid label image) pairs, resized to ``size`` (labels nearest-neighbour)."""
    import cv2

    pairs = []
    for image_path in sorted((CAMVID / 'images').glob('*.png')):
        image = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)
        labels = cv2.imread(str(CAMVID / 'labels' / image_path.name), cv2.IMREAD_UNCHANGED)
        pairs.append((cv2.resize(image, size[::-1], interpolation=cv2.INTER_AREA),
                      cv2.resize(labels, size[::-1], interpolation=cv2.INTER_NEAREST)))
    return pairs


def _normalised(images: list[np.ndarray]) -> torch.Tensor:
    from seg_models.models.semantic_graph import IMAGENET_MEAN, IMAGENET_STD

    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    return (batch - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


@torch.no_grad()
def recalibrate_batch_norm(module: torch.nn.Module, forward, batches) -> None:
    """Running BatchNorm statistics as the average over ``batches`` (``forward(batch)`` in train
    mode): a few minutes of training leave them far from the data (MobileNetV3's momentum is 0.01)."""
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
    module.train()
    for batch in batches:
        forward(batch)
    module.eval()


def fit_deeplabv3plus(path: Path, steps: int = 150, seed: int = 0, device: str = 'cpu') -> Path:
    """DeepLabv3+ MobileNetV3-Large (output stride 16) fitted to every CamVid frame; a checkpoint."""
    from seg_models.models.deeplabv3plus import deeplabv3plus

    torch.manual_seed(seed)
    pairs = camvid_frames()
    network = deeplabv3plus('mobilenet_v3_large', num_classes=11).train().to(device)
    optimiser = torch.optim.AdamW(network.parameters(), lr=2e-3)
    images = _normalised([p[0] for p in pairs]).to(device)
    labels = torch.from_numpy(np.stack([p[1] for p in pairs])).long().to(device)
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    for step in range(steps):
        chosen = rng.choice(len(pairs), 4, replace=False)
        loss = torch.nn.functional.cross_entropy(network(images[chosen]), labels[chosen], ignore_index=CAMVID_VOID)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    recalibrate_batch_norm(network, network, images.split(4))
    print(f'fitted DeepLabv3+ to CamVid: {steps} steps, loss {float(loss):.3f}, '
          f'{time.perf_counter() - started:.0f} s')
    torch.save(network.cpu().state_dict(), path)
    return path


def instance_targets(labels: np.ndarray) -> dict[str, torch.Tensor]:
    """Mask R-CNN targets: each connected component of Car or Pedestrian pixels is an instance."""
    import cv2

    boxes, classes, masks = [], [], []
    for camvid_class, network_class in INSTANCE_CLASSES.items():
        count, components = cv2.connectedComponents((labels == camvid_class).astype(np.uint8))
        for component in range(1, count):
            mask = components == component
            if mask.sum() < MIN_INSTANCE_PIXELS:
                continue
            rows, columns = np.nonzero(mask)
            boxes.append([columns.min(), rows.min(), columns.max() + 1, rows.max() + 1])
            classes.append(network_class)
            masks.append(mask)
    return {'boxes': torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            'labels': torch.tensor(classes, dtype=torch.int64),
            'masks': torch.from_numpy(np.stack(masks) if masks else np.zeros((0, *labels.shape), bool)).to(torch.uint8)}


def fit_mask_rcnn(path: Path, steps: int = 150, frames: int = 6, seed: int = 0, device: str = 'cpu') -> Path:
    """Mask R-CNN R50-FPN (cityscapes_things classes) fitted to a few CamVid frames; a checkpoint."""
    from seg_models.models.maskrcnn import mask_rcnn

    torch.manual_seed(seed)
    pairs = [pair for pair in camvid_frames() if len(instance_targets(pair[1])['labels'])][:frames]
    network = mask_rcnn('maskrcnn_resnet50_fpn', 9)
    # Training at the fitted size: torchvision's transform would otherwise resize to 800 pixels.
    network.transform.min_size, network.transform.max_size = (FIT_SIZE[0],), FIT_SIZE[1]
    network.rpn._pre_nms_top_n['training'], network.rpn._post_nms_top_n['training'] = 600, 300
    network.roi_heads.fg_bg_sampler.batch_size_per_image = 128
    network.train().to(device)
    optimiser = torch.optim.AdamW(network.parameters(), lr=3e-4)
    images = [torch.from_numpy(image).permute(2, 0, 1).float().to(device) / 255 for image, _ in pairs]
    targets = [{name: value.to(device) for name, value in instance_targets(labels).items()} for _, labels in pairs]
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    for step in range(steps):
        chosen = rng.choice(len(pairs), 2, replace=False)
        losses = network([images[index] for index in chosen], [targets[index] for index in chosen])
        loss = sum(losses.values())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    batches = [network.transform(images[start:start + 2])[0].tensors for start in range(0, len(images), 2)]
    recalibrate_batch_norm(network.backbone, network.backbone, batches)
    print(f'fitted Mask R-CNN to CamVid: {steps} steps, loss {float(loss):.3f}, '
          f'{time.perf_counter() - started:.0f} s')
    torch.save(network.cpu().state_dict(), path)
    return path
