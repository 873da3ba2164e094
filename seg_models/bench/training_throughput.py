"""Training throughput: ``seg-models train``'s loop against torchvision's reference loop, side by side.

    python -m seg_models.bench.training_throughput --data ../shared/data/camvid

The same network (DeepLabv3+ MobileNetV3-Large, random weights), batch, crop and data (a CamVid-
layout split), on the same device, one after the other in one run: first torchvision's reference
loop as references/segmentation/train.py writes it (its SegmentationPresetTrain transforms:
RandomResize 0.5-2.0, flip, RandomCrop, then normalise; NCHW tensors; SGD, cross entropy ignoring
255), then ours (``seg_models.training.run.train``: mmseg's augmentation, channels-last, the same
optimiser). Each is timed per iteration after its warm-up; the table gives images per second and
the ratio. On CUDA ``--amp`` is measured beside fp32.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2

from seg_models.data.labels import get_label_set
from seg_models.models.deeplabv3plus import deeplabv3plus
from seg_models.training import data
from seg_models.training.augment import IGNORE
from seg_models.training.run import TrainingSettings, normalised, train

ARCHITECTURE = 'deeplabv3plus_mobilenet_v3_large'


class ReferenceSet(torch.utils.data.Dataset):
    """A split through torchvision's reference segmentation transforms (presets.SegmentationPresetTrain)."""

    def __init__(self, split: data.SplitData, base: int, crop: tuple[int, int]) -> None:
        self.split = split
        self.transform = v2.Compose([v2.RandomResize(int(0.5 * base), int(2.0 * base)), v2.RandomHorizontalFlip(0.5),
                                     v2.RandomCrop(crop, pad_if_needed=True,
                                                   fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE})])

    def __len__(self) -> int:
        return len(self.split.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rgb, target, _ = data.read_target(self.split, self.split.files[index])
        image, mask = self.transform(tv_tensors.Image(torch.from_numpy(rgb).permute(2, 0, 1)),
                                     tv_tensors.Mask(torch.from_numpy(target)))
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor).long()


def reference_loop(split: data.SplitData, batch: int, base: int, crop: tuple[int, int], iterations: int,
                   warmup: int, workers: int, device: torch.device, amp: bool) -> list[float]:
    """Seconds per iteration of torchvision's reference training loop (after ``warmup``)."""
    torch.manual_seed(0)
    model = deeplabv3plus('mobilenet_v3_large', get_label_set('camvid').num_classes).to(device).train()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    loader = torch.utils.data.DataLoader(ReferenceSet(split, base, crop), batch_size=batch, shuffle=True,
                                         num_workers=workers, drop_last=True, persistent_workers=workers > 0)
    times, last = [], time.perf_counter()
    while len(times) < iterations + warmup:
        for images, targets in loader:
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                output = model(normalised(images.to(device)))
                loss = F.cross_entropy(output.float(), targets.to(device), ignore_index=IGNORE)
            optimiser.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
            now = time.perf_counter()
            times.append(now - last)
            last = now
            if len(times) == iterations + warmup:
                break
    return times[warmup:]


def our_loop(source: str, batch: int, base: int, crop: tuple[int, int], iterations: int, warmup: int,
             workers: int, device: str, amp: bool) -> list[float]:
    """Seconds per iteration of ``seg-models train``'s loop (after ``warmup``), validation off."""
    stamps = []
    with tempfile.TemporaryDirectory(prefix='seg_train_bench_') as folder:
        train(TrainingSettings(task='semantic', data=source, output=folder, val_split='', architecture=ARCHITECTURE,
                               iterations=iterations + warmup, batch_size=batch, crop_size=crop,
                               base_size=(base, base * 4 // 3), checkpoint_every=10**9, workers=workers,
                               device=device, amp=amp, learning_rate=0.01),
              progress=False, on_iteration=lambda _: stamps.append(time.perf_counter()))
    return list(np.diff(stamps)[warmup - 1:])


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data', required=True, help='a CamVid-layout dataset (train/, trainannot/)')
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--base', type=int, default=180, help='shorter side random resizing is relative to')
    parser.add_argument('--crop-size', type=int, nargs=2, default=(176, 240), metavar=('HEIGHT', 'WIDTH'))
    parser.add_argument('--iterations', type=int, default=8)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--workers', type=int, default=1)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    args = parser.parse_args(argv)
    split = data.open_split(Path(args.data), 'train', get_label_set('camvid'))
    runs = [('torchvision reference loop', False), ('seg-models train', False)]
    if args.device.startswith('cuda'):
        runs += [('torchvision reference loop, AMP', True), ('seg-models train, AMP', True)]
    rows = []
    for name, amp in runs:
        if name.startswith('torchvision'):
            times = reference_loop(split, args.batch_size, args.base, tuple(args.crop_size), args.iterations,
                                   args.warmup, args.workers, torch.device(args.device), amp)
        else:
            times = our_loop(args.data, args.batch_size, args.base, tuple(args.crop_size), args.iterations,
                             args.warmup, args.workers, args.device, amp)
        rows.append((name, args.batch_size / statistics.median(times)))
    print(f'\ntraining throughput, DeepLabv3+ MobileNetV3-Large, batch {args.batch_size}, crop '
          f'{args.crop_size[0]}x{args.crop_size[1]}, {args.device}, median of {args.iterations} iterations:')
    for name, images_per_sec in rows:
        print(f'  {name:<34} {images_per_sec:8.2f} images/s  {images_per_sec / rows[0][1]:.2f}x')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
