"""``seg-models train``: one training run, on one process or as one of several (torchrun, Ray Train).

A run is a folder: ``checkpoints/`` (every ``checkpoint_every`` iterations and at the end),
``tensorboard/`` (loss, learning rate, validation metrics), ``model.safetensors`` with its model
card (``model_card.md``), and ``settings.json``. ``resume`` continues from the last checkpoint with
the same weights, optimiser, schedule, data order and augmentation as a run that was never
stopped. SIGINT/SIGTERM save a checkpoint and end the run cleanly; a non-finite loss stops it
with the last good checkpoint kept, naming the iteration.

In a distributed run (``torch.distributed`` initialised by torchrun or Ray Train), every process
draws its shard of each global batch (``RunOrder``), gradients are averaged by DDP with the loss
normalised over the global batch, batch norm is synchronised on GPUs (SyncBatchNorm), and only
rank 0 writes files.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from seg_models.checkpoints.formats import import_deeplabv3plus, strip_wrapper_prefix
from seg_models.checkpoints.named import local_checkpoint
from seg_models.checkpoints.reading import CheckpointError, read_state_dict
from seg_models.data.labels import LabelSet, cityscapes_things, get_label_set
from seg_models.training import TrainingError, augment, data
from seg_models.training.checkpointing import CheckpointFolder, load_training_state, save_weights
from seg_models.training.recipes import RECIPES, Recipe

LOGGER = logging.getLogger(__name__)
TRAINING_TASKS = ('semantic', 'instance')


@dataclass(frozen=True)
class TrainingSettings:
    """Everything a run depends on (written to settings.json; a resumed run must match it)."""

    task: str = 'semantic'
    data: str = ''  # dataset root: Cityscapes, images/ + labels/, or CamVid's layout
    output: str = ''  # the run folder
    train_split: str = 'train'
    val_split: str = 'val'  # '' to skip validation
    dataset_label_set: str = ''  # id space of folder labels; default: the model's label set
    architecture: str = ''  # default: the task's (seg_models.tasks)
    label_set: str = ''  # default: the data's (camvid, a folder's label set, cityscapes / cityscapes_things)
    output_stride: int = 16
    head_layout: str = 'paper'  # DeepLabv3+ head (seg_models.models.deeplabv3plus.HEAD_LAYOUTS): paper or separable
    init: str = ''  # weights to start from ('' random)
    iterations: int = 1000
    batch_size: int = 8  # the global batch (all processes, all micro-batches)
    accumulate: int = 1  # micro-batches per step and process: less memory, the same step
    crop_size: tuple[int, int] = (512, 1024)  # semantic training crop (height, width)
    base_size: tuple[int, int] = ()  # size random scaling is relative to; default: the first image's
    learning_rate: float = 0.0  # 0: the recipe's (instances: per image of the global batch)
    eval_every: int = 0  # 0: at the end only
    checkpoint_every: int = 500
    input_size: tuple[int, int] = ()  # network input recorded in the model card; default: base_size
    seed: int = 0
    workers: int = 2
    device: str = 'auto'
    amp: Optional[bool] = None  # automatic mixed precision; default: on CUDA
    licence: str = ''  # the data's licence, for the model card
    stop_after: int = 0  # end this invocation (checkpoint saved) after so many iterations; 0: run to the end

    def resolved(self, first_image_size: tuple[int, int]) -> 'TrainingSettings':
        from seg_models.tasks import get_task

        task = get_task(self.task)
        base = tuple(self.base_size) or first_image_size
        return dataclasses.replace(self, architecture=self.architecture or task.default_architecture,
                                   base_size=base, input_size=tuple(self.input_size) or base)


@dataclass
class RunState:
    iteration: int = 0
    history: list = field(default_factory=list)  # (iteration, metrics) of every validation


def world() -> tuple[int, int]:
    """(rank, world size) of this process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def resolved_device(device: str) -> torch.device:
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cuda' and dist.is_initialized():
        import os

        device = f'cuda:{int(os.environ.get("LOCAL_RANK", 0))}'
    return torch.device(device)


def model_label_set(settings: TrainingSettings, id_space: str) -> LabelSet:
    """The classes the model learns: the given label set, else the data's own."""
    if settings.label_set:
        return get_label_set(settings.label_set)
    if settings.task == 'instance':
        return cityscapes_things() if id_space == data.CITYSCAPES_LABEL_IDS else get_label_set(id_space)
    return get_label_set('cityscapes' if id_space == data.CITYSCAPES_LABEL_IDS else id_space)


def semantic_split_label_set(settings: TrainingSettings, network_label_set: LabelSet, id_space: str) -> LabelSet:
    """The per-pixel classes the ground truth is read in: the network's for semantic models;
    for Mask R-CNN on Cityscapes the 19 classes whose things it learns."""
    if settings.task == 'instance' and id_space == data.CITYSCAPES_LABEL_IDS:
        return get_label_set('cityscapes')
    return network_label_set


class Task:
    """What differs between training a semantic and an instance network."""

    def __init__(self, settings: TrainingSettings, label_set: LabelSet) -> None:
        self.settings, self.label_set = settings, label_set

    # building
    def network(self) -> nn.Module:
        raise NotImplementedError

    def load_init(self, network: nn.Module, path: str) -> None:
        raise NotImplementedError

    def training_set(self, split: data.SplitData, recipe: Recipe):
        raise NotImplementedError

    def collate(self, batch: list) -> Any:
        raise NotImplementedError

    def loss(self, network: nn.Module, batch: Any, share: float, device: torch.device) -> torch.Tensor:
        """The micro-batch's loss, scaled so the gradients of all micro-batches of all processes
        (averaged by DDP) are those of the global batch's loss (``share``: its part of the batch)."""
        raise NotImplementedError

    def evaluate(self, network: nn.Module, split: data.SplitData, device: torch.device) -> dict:
        raise NotImplementedError

    def model_card(self) -> dict:
        settings = self.settings
        return {'task': settings.task, 'architecture': settings.architecture, 'head_layout': settings.head_layout,
                'label_set': self.label_set.name,
                'num_classes': self.label_set.num_classes, 'input_size': list(settings.input_size),
                'output_stride': settings.output_stride}


class SemanticTask(Task):
    def network(self) -> nn.Module:
        from seg_models.models.deeplabv3plus import DEEPLABV3PLUS_ARCHITECTURES

        if self.settings.architecture not in DEEPLABV3PLUS_ARCHITECTURES:
            raise TrainingError(f'unknown semantic architecture {self.settings.architecture!r}; known: '
                                f'{", ".join(DEEPLABV3PLUS_ARCHITECTURES)}')
        return DEEPLABV3PLUS_ARCHITECTURES[self.settings.architecture](self.label_set.num_classes,
                                                                        self.settings.output_stride,
                                                                        self.settings.head_layout)

    def load_init(self, network: nn.Module, path: str) -> None:
        checkpoint_format, state_dict = import_deeplabv3plus(read_state_dict(path))
        if checkpoint_format.head_layout != self.settings.head_layout:
            raise TrainingError(f'{path} is a {checkpoint_format.name} checkpoint with the '
                                f'{checkpoint_format.head_layout} head; train with --head-layout '
                                f'{checkpoint_format.head_layout} to start from it')
        load_reinitialising_heads(network, state_dict, path, heads=('head.classifier.',))

    def training_set(self, split: data.SplitData, recipe: Recipe):
        pipeline = augment.semantic_pipeline(recipe, self.settings.base_size, self.settings.crop_size)
        return data.SemanticTrainingSet(split, pipeline)

    def collate(self, batch: list) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.stack([image for image, _ in batch]), torch.stack([target for _, target in batch])

    def loss(self, network: nn.Module, batch: Any, share: float, device: torch.device) -> torch.Tensor:
        """Cross entropy summed over the micro-batch's labelled pixels, over those of the global batch."""
        images, targets = (tensor.to(device, non_blocking=True) for tensor in batch)
        logits = network(normalised(images).contiguous(memory_format=torch.channels_last))
        total = F.cross_entropy(logits.float(), targets, ignore_index=augment.IGNORE, reduction='sum')
        return total * self.scale

    def begin_step(self, micro_batches: list, device: torch.device) -> None:
        """``scale``: world size / labelled pixels of the global batch (all micro-batches, all
        processes), so DDP's average of the processes' gradients is the global batch's mean."""
        count = torch.tensor(float(sum(int((targets != augment.IGNORE).sum()) for _, targets in micro_batches)),
                             device=device)
        _, world_size = world()
        if world_size > 1:
            dist.all_reduce(count)
        self.scale = world_size / count.clamp(min=1.0)

    @torch.no_grad()
    def evaluate(self, network: nn.Module, split: data.SplitData, device: torch.device) -> dict:
        from seg_models.bench.metrics import CityscapesFiles, confusion_matrix, scores_from_confusion
        from seg_models.data.datasets import read_sample
        from seg_models.segmenters.transform import CameraTransform

        network.eval()
        transform = CameraTransform(self.settings.input_size)
        matrix = np.zeros((self.label_set.num_classes, self.label_set.num_classes + 1), np.int64)
        official = split.id_space == data.CITYSCAPES_LABEL_IDS  # cityscapesscripts' own evaluation too
        with tempfile.TemporaryDirectory(prefix='seg_train_eval_') as folder:
            files_for_official = CityscapesFiles(Path(folder)) if official else None
            for files in split.files:
                rgb, target, _ = data.read_target(split, files)
                batch = torch.from_numpy(transform.batch([rgb])).to(device)
                logits = network(normalised(batch))
                logits = F.interpolate(logits.float(), size=rgb.shape[:2], mode='bilinear', align_corners=False)
                prediction = logits.argmax(1)[0].cpu().numpy()
                matrix += confusion_matrix(target, prediction, self.label_set.num_classes)
                if official:
                    files_for_official.add_ground_truth(files.name, label_ids=read_sample(files).semantic)
                    files_for_official.add_semantic(files.name, prediction.astype(np.uint8))
            scores = scores_from_confusion(matrix, self.label_set.names)
            metrics = {'miou': scores['miou'], 'pixel_accuracy': scores['pixel_accuracy'],
                       'per_class_iou': scores['per_class_iou'], 'frames': len(split.files)}
            if official:
                metrics['miou_cityscapes_official'] = files_for_official.semantic_scores()['miou']
        network.train()
        return metrics


class InstanceTask(Task):
    def __init__(self, settings: TrainingSettings, label_set: LabelSet) -> None:
        from seg_models.models.maskrcnn import network_classes_for

        super().__init__(settings, label_set)
        self.network_classes = network_classes_for(label_set)

    def network(self) -> nn.Module:
        from seg_models.models.maskrcnn import MASK_RCNN_BUILDERS, mask_rcnn

        if self.settings.architecture not in MASK_RCNN_BUILDERS:
            raise TrainingError(f'unknown instance architecture {self.settings.architecture!r}; known: '
                                f'{", ".join(MASK_RCNN_BUILDERS)}')
        network = mask_rcnn(self.settings.architecture, len(self.network_classes))
        # torchvision's references train multi-scale around the data's own size, not at 800 pixels
        low, high = RECIPES['instance'].scale_range
        shorter = min(self.settings.base_size)
        network.transform.min_size = tuple(range(int(shorter * low) // 32 * 32, int(shorter * high) + 1, 32))
        network.transform.max_size = int(max(self.settings.base_size) * high)
        return network

    def load_init(self, network: nn.Module, path: str) -> None:
        load_reinitialising_heads(network, strip_wrapper_prefix(read_state_dict(path)), path,
                                  heads=('roi_heads.box_predictor.', 'roi_heads.mask_predictor.mask_fcn_logits.'))

    def training_set(self, split: data.SplitData, recipe: Recipe):
        split_label_set = semantic_split_label_set(self.settings, self.label_set, split.id_space)
        classes = data.network_classes_of_things(split_label_set, self.network_classes)
        return data.InstanceTrainingSet(split, augment.instance_pipeline(recipe, self.settings.base_size), classes)

    def collate(self, batch: list) -> tuple[list, list]:
        return [image for image, _ in batch], [target for _, target in batch]

    def begin_step(self, micro_batches: list, device: torch.device) -> None:
        pass

    def loss(self, network: nn.Module, batch: Any, share: float, device: torch.device) -> torch.Tensor:
        images, targets = batch
        losses = network([image.to(device) for image in images],
                         [{name: value.to(device) for name, value in target.items()} for target in targets])
        return sum(losses.values()) * share * world()[1]

    @torch.no_grad()
    def evaluate(self, network: nn.Module, split: data.SplitData, device: torch.device) -> dict:
        """Mask recall at IoU 0.5 on the validation split (detections scoring 0.5 and more): a
        quick measure to follow a run; AP comes from seg_bag evaluate on a bag."""
        network.eval()
        dataset = self.training_set(split, dataclasses.replace(RECIPES['instance'], scale_range=(1.0, 1.0), flip=0))
        found = total = 0
        for index in range(len(dataset)):
            rgb, (_, classes, masks) = dataset.objects(index)
            image = torch.from_numpy(rgb).permute(2, 0, 1).float().div(255).to(device)
            output = network([image])[0]
            keep = output['scores'] >= 0.5
            predicted = (output['masks'][keep, 0] >= 0.5).cpu().numpy()
            labels = output['labels'][keep].cpu().numpy()
            for mask, cls in zip(masks, classes):
                overlaps = [np.logical_and(mask, p).sum() / max(np.logical_or(mask, p).sum(), 1)
                            for p, label in zip(predicted, labels) if label == cls]
                found += bool(overlaps) and max(overlaps) >= 0.5
                total += 1
        network.train()
        return {'mask_recall_50': found / total if total else None, 'objects': total, 'frames': len(dataset)}


def normalised(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> the network's normalised float input (the deployment graph's constants)."""
    from seg_models.models.semantic_graph import IMAGENET_MEAN, IMAGENET_STD

    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() - mean) / std


def load_reinitialising_heads(network: nn.Module, state_dict: dict, source: str, heads: tuple[str, ...]) -> None:
    """Load ``state_dict``; class-specific layers (``heads`` prefixes) whose shape differs (another
    label set) keep their fresh initialisation, and the log says so. Any other missing, unexpected or
    mis-shaped key means another architecture: refused in one line."""
    own = network.state_dict()
    mismatched = [key for key in state_dict if key in own and own[key].shape != state_dict[key].shape]
    reinitialised = [key for key in mismatched if key.startswith(heads)]
    foreign = [key for key in mismatched if key not in reinitialised]
    missing = [key for key in own if key not in state_dict and not key.endswith('num_batches_tracked')]
    unexpected = [key for key in state_dict if key not in own]
    if foreign or missing or unexpected:
        problems = [f'{len(found)} {what} (e.g. {found[0]})' for what, found in
                    (('keys of another shape', foreign), ('missing keys', missing), ('unexpected keys', unexpected))
                    if found]
        raise CheckpointError(f'{source} is not a checkpoint of this architecture: {"; ".join(problems)}')
    network.load_state_dict({key: value for key, value in state_dict.items() if key not in reinitialised},
                            strict=False)
    if reinitialised:
        LOGGER.warning('%s: the class-specific layers %s are re-initialised (the checkpoint has another number of '
                       'classes)', source, ', '.join(sorted({key.rsplit('.', 1)[0] for key in reinitialised})))


TASK_TYPES: dict[str, Callable[[TrainingSettings, LabelSet], Task]] = {'semantic': SemanticTask,
                                                                       'instance': InstanceTask}


class StopRequest:
    """SIGINT/SIGTERM during a run: finish the step, save, end cleanly."""

    def __init__(self) -> None:
        self.signal: Optional[int] = None
        self._previous = {}

    def __enter__(self) -> 'StopRequest':
        import threading

        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self._previous[number] = signal.signal(number, self._on_signal)
        return self

    def _on_signal(self, number: int, frame) -> None:
        self.signal = number

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)


# tasks whose networks train BatchNorm layers (DeepLabv3+'s image pooling sees one value per channel and
# sample): a micro-batch of one sample cannot train them unless SyncBatchNorm pools the processes (CUDA)
BATCH_NORM_TASKS = ('semantic',)


def check_batch_split(settings: TrainingSettings, world_size: int, synchronised_batch_norm: bool) -> None:
    """Refuse, before anything starts, a global batch that does not split into the processes and
    micro-batches, or micro-batches BatchNorm cannot train on."""
    if settings.batch_size % (world_size * settings.accumulate):
        raise TrainingError(f'batch {settings.batch_size} does not split into {world_size} process(es) x '
                            f'{settings.accumulate} micro-batch(es)')
    micro = settings.batch_size // (world_size * settings.accumulate)
    pooled = micro * world_size if synchronised_batch_norm and world_size > 1 else micro
    if settings.task in BATCH_NORM_TASKS and pooled < 2:
        raise TrainingError(f'batch {settings.batch_size} over {world_size} process(es) x {settings.accumulate} '
                            f'micro-batch(es) gives BatchNorm {pooled} sample per step, and it needs 2 or more: '
                            f'raise --batch-size to {2 * world_size * settings.accumulate} or more')


def train(settings: TrainingSettings, progress: bool = True,
          on_iteration: Optional[Callable[[int], None]] = None) -> dict:
    """Run (or resume) the training ``settings`` describe; returns the final summary (model card).
    ``on_iteration(n)`` is called after each optimiser step (benchmarks time the loop with it)."""
    if settings.task not in TASK_TYPES:
        raise TrainingError(f'unknown task {settings.task!r}; seg-models train trains {", ".join(TASK_TYPES)}')
    rank, world_size = world()
    device = resolved_device(settings.device)
    output = Path(settings.output)
    recipe = RECIPES[settings.task]
    if settings.learning_rate:
        recipe = dataclasses.replace(recipe, learning_rate=settings.learning_rate)
    check_batch_split(settings, world_size, synchronised_batch_norm=device.type == 'cuda')

    id_space, first_image_size = data.describe(Path(settings.data), settings.train_split,
                                               settings.dataset_label_set or settings.label_set or 'camvid')
    settings = settings.resolved(first_image_size)
    label_set = model_label_set(settings, id_space)
    task = TASK_TYPES[settings.task](settings, label_set)
    split_label_set = semantic_split_label_set(settings, label_set, id_space)
    def split(name: str) -> data.SplitData:
        return data.open_split(Path(settings.data), name, split_label_set, settings.dataset_label_set)

    train_split = split(settings.train_split)
    val_split = split(settings.val_split) if settings.val_split else None

    checkpoints = CheckpointFolder(output)
    state = RunState()
    torch.manual_seed(settings.seed)
    network = task.network()
    last = checkpoints.last()
    if last is not None:
        _check_same_run(output, settings)
        network.load_state_dict(read_state_dict(last.weights))
        saved = load_training_state(last.state)
        state.iteration = int(saved['iteration'])
        state.history = json.loads(saved['history'])
        LOGGER.info('resuming %s at iteration %d', output, state.iteration)
    elif settings.init:
        task.load_init(network, local_checkpoint(settings.init, settings.task))
    # channels-last: oneDNN's convolutions (CPU) and tensor cores (GPU) both run faster on it; on this
    # 2-core CPU a DeepLabv3+ MobileNetV3 step took half the time
    network.to(device).train().to(memory_format=torch.channels_last)
    if device.type == 'cuda' and world_size > 1:
        network = nn.SyncBatchNorm.convert_sync_batchnorm(network)
    model = network
    if world_size > 1:
        model = nn.parallel.DistributedDataParallel(network, device_ids=[device.index] if device.type == 'cuda'
                                                    else None)
    optimiser = torch.optim.SGD(_parameter_groups(network, recipe), lr=_base_lr(recipe, settings),
                                momentum=recipe.momentum)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: recipe.learning_rate_factor(step, settings.iterations))
    if last is not None:
        optimiser.load_state_dict(saved['optimiser'])
        schedule.load_state_dict(saved['schedule'])
        torch.set_rng_state(saved['torch_rng'])
    amp = device.type == 'cuda' if settings.amp is None else settings.amp
    scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == 'cuda')

    if rank == 0:
        output.mkdir(parents=True, exist_ok=True)
        (output / 'settings.json').write_text(json.dumps(dataclasses.asdict(settings), indent=1))
    writer = _tensorboard(output) if rank == 0 else None
    order = data.RunOrder(len(train_split.files), settings.batch_size, settings.seed, state.iteration, rank,
                          world_size)
    loader = torch.utils.data.DataLoader(task.training_set(train_split, recipe), batch_size=None, sampler=order,
                                         num_workers=settings.workers, collate_fn=_as_is,
                                         persistent_workers=settings.workers > 0, worker_init_fn=_ignore_interrupts,
                                         pin_memory=device.type == 'cuda')
    with torch.random.fork_rng(devices=[]):  # the loader's base seed must not move the run's RNG
        samples = iter(loader)
    shard = settings.batch_size // world_size
    micro = shard // settings.accumulate

    def save() -> None:
        if rank == 0:
            checkpoints.save(state.iteration, network.state_dict(), _card(task, settings, state), lambda: {
                'iteration': state.iteration, 'optimiser': optimiser.state_dict(), 'schedule': schedule.state_dict(),
                'torch_rng': torch.get_rng_state(), 'history': json.dumps(state.history)})
        if world_size > 1:
            dist.barrier()

    bar = _progress(settings.iterations, state.iteration, enabled=progress and rank == 0)
    started, first = time.perf_counter(), state.iteration
    try:
        with StopRequest() as stop:
            while state.iteration < settings.iterations:
                step_samples = [next(samples) for _ in range(shard)]
                micro_batches = [task.collate(step_samples[start:start + micro]) for start in range(0, shard, micro)]
                task.begin_step(micro_batches, device)
                optimiser.zero_grad(set_to_none=True)
                step_loss = 0.0
                for position, batch in enumerate(micro_batches):
                    # dropout drawn per micro-batch of the global batch: the same on any number of processes
                    torch.manual_seed(augment.sample_seed(settings.seed, (state.iteration * world_size + rank)
                                                          * settings.accumulate + position, augment.DROPOUT))
                    sync = position == len(micro_batches) - 1 or world_size == 1
                    with (model.no_sync() if not sync else contextlib.nullcontext()), \
                            torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                        loss = task.loss(model, batch, micro / settings.batch_size, device)
                    scaler.scale(loss).backward()
                    step_loss += float(loss.detach())
                if not math.isfinite(step_loss):
                    kept = checkpoints.last()
                    kept = kept.weights if kept else 'none (no checkpoint was written yet)'
                    raise TrainingError(f'the loss became {step_loss} at iteration {state.iteration + 1}; stopped. The '
                                        f'last good checkpoint is {kept}; lower --learning-rate or check the data')
                scaler.step(optimiser)
                scaler.update()
                schedule.step()
                state.iteration += 1
                if on_iteration is not None:
                    on_iteration(state.iteration)
                if writer is not None:
                    writer.add_scalar('train/loss', step_loss / world_size, state.iteration)
                    writer.add_scalar('train/learning_rate', schedule.get_last_lr()[0], state.iteration)
                bar.set_postfix(loss=f'{step_loss / world_size:.3f}', lr=f'{schedule.get_last_lr()[0]:.2e}')
                bar.update()
                done = state.iteration >= settings.iterations
                if val_split is not None and rank == 0 and (done or (settings.eval_every and
                                                                      state.iteration % settings.eval_every == 0)):
                    metrics = task.evaluate(network, val_split, device)
                    state.history.append([state.iteration, metrics])
                    _log_metrics(writer, metrics, state.iteration)
                    bar.write(f'iteration {state.iteration}: ' + _metrics_line(metrics))
                if world_size > 1 and val_split is not None:
                    dist.barrier()
                pause = settings.stop_after and state.iteration - first >= settings.stop_after
                stopping = _stop_everywhere(stop)
                if done or pause or stopping or state.iteration % settings.checkpoint_every == 0:
                    save()
                if not done and (pause or stopping):
                    why = signal.Signals(stop.signal).name if stopping else f'--stop-after {settings.stop_after}'
                    bar.write(f'stopped by {why} at iteration {state.iteration}, checkpoint saved; continue with '
                              f'--resume')
                    break
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    card = _card(task, settings, state)
    if rank == 0 and state.iteration >= settings.iterations:
        save_weights(output / 'model.safetensors', network.state_dict(), card)
        (output / 'model_card.md').write_text(model_card_markdown(card))
        seconds = time.perf_counter() - started
        LOGGER.info('trained %d iterations in %.0f s (%.2f images/s)', state.iteration - first, seconds,
                    (state.iteration - first) * settings.batch_size / max(seconds, 1e-9))
    return card


def _check_same_run(output: Path, settings: TrainingSettings) -> None:
    try:
        recorded = json.loads((output / 'settings.json').read_text())
    except (OSError, ValueError):
        return
    free = ('workers', 'device', 'output', 'stop_after')  # may change between invocations
    differing = [name for name, value in dataclasses.asdict(settings).items()
                 if name not in free and json.loads(json.dumps(value)) != recorded.get(name)]
    if differing:
        raise TrainingError(f'{output} holds a run with other settings ({", ".join(differing)}); resume it with '
                            f'the same settings or train into another folder')


def _ignore_interrupts(worker: int) -> None:
    """Data loading processes leave SIGINT/SIGTERM to the run, which saves and stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _as_is(sample: Any) -> Any:
    """The loader's collate: samples come one by one (batch_size=None) and are batched per micro-batch."""
    return sample


def _base_lr(recipe: Recipe, settings: TrainingSettings) -> float:
    return recipe.learning_rate * (settings.batch_size if settings.task == 'instance' and not settings.learning_rate
                                   else 1)


def _parameter_groups(network: nn.Module, recipe: Recipe) -> list[dict]:
    """Weight decay on weights, none on norms and biases (as both references configure it)."""
    decay, no_decay = [], []
    for name, parameter in network.named_parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    return [{'params': decay, 'weight_decay': recipe.weight_decay}, {'params': no_decay, 'weight_decay': 0.0}]


def _stop_everywhere(stop: StopRequest) -> bool:
    flag = torch.tensor(float(stop.signal is not None))
    if world()[1] > 1:
        dist.all_reduce(flag)
    return bool(flag > 0)


def _progress(total: int, done: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=done, disable=not enabled, unit='it', dynamic_ncols=True,
                desc='training')


def _tensorboard(output: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(output / 'tensorboard'))


def _log_metrics(writer, metrics: dict, iteration: int) -> None:
    if writer is None:
        return
    for name, value in metrics.items():
        if isinstance(value, (int, float)) and value is not None:
            writer.add_scalar(f'val/{name}', value, iteration)


def _metrics_line(metrics: dict) -> str:
    return ', '.join(f'{name} {100 * value:.1f}%' if isinstance(value, float) and name != 'frames' else
                     f'{name} {value}' for name, value in metrics.items() if not isinstance(value, dict))


def _card(task: Task, settings: TrainingSettings, state: RunState) -> dict:
    card = task.model_card()
    recipe = dataclasses.asdict(RECIPES[settings.task])
    if settings.learning_rate:
        recipe['learning_rate'] = settings.learning_rate
    card.update(iterations=state.iteration, schedule_iterations=settings.iterations, data=settings.data,
                train_split=settings.train_split, val_split=settings.val_split, recipe=recipe,
                batch_size=settings.batch_size, crop_size=list(settings.crop_size), seed=settings.seed,
                licence=settings.licence, validation=state.history[-1][1] if state.history else None)
    if settings.init:
        card['init'] = settings.init
    return card


def model_card_markdown(card: dict) -> str:
    """A person's view of a model card."""
    validation = card.get('validation') or {}
    lines = [f'# {card["architecture"]} ({card["task"]}), label set {card["label_set"]}', '',
             f'- trained by `seg-models train` for {card["iterations"]} iterations (of a schedule of '
             f'{card.get("schedule_iterations", card["iterations"])}), batch {card["batch_size"]}, seed {card["seed"]}',
             f'- data: {card["data"]} (train split `{card["train_split"]}`, validation '
             f'split `{card["val_split"]}`)', f'- licence of the data (the weights inherit it): '
             f'{card.get("licence") or "not given"}', f'- network input size: {card["input_size"]}',
             f'- recipe: {json.dumps(card["recipe"])}']
    if card.get('init'):
        lines.insert(3, f'- started from: {card["init"]}')
    lines.append('')
    if validation:
        lines += ['## Validation', '', _metrics_line(validation), '']
        per_class = validation.get('per_class_iou') or {}
        if per_class:
            lines += ['| class | IoU |', '| --- | --- |'] + [
                f'| {name} | {"n/a" if value is None or value != value else f"{100 * value:.1f}%"} |'
                for name, value in per_class.items()] + ['']
    return '\n'.join(lines)

