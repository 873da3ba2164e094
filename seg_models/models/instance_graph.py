"""The Mask R-CNN deployment graph: fixed-size uint8 images in, fixed-size detection tensors out.

TensorRT needs static shapes, so the graph pads every image's detections to ``max_detections``
(padding rows have score 0 and are counted out by ``num_detections``). Masks leave the graph as
the mask head's low-resolution probabilities; they are pasted once, at the camera's resolution,
never resized twice (seg_models.segmenters.instance_postprocess: on the host, or on the GPU they were made on).

The graph keeps only the detections that will be published (``keep_published_detections``: score
threshold, classes, the most instances), so the mask head, the costliest stage after the backbone,
runs for those alone: torchvision's defaults would run it for up to 100 boxes down to score 0.05.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads

from seg_models.models.semantic_graph import no_mark
from seg_models.segmenters.transform import Size, frames_at_input_size

INSTANCE_OUTPUT_NAMES = ('boxes', 'scores', 'labels', 'mask_probs', 'num_detections')
# In fp16 and int8 graphs (seg_models.deploy.precision) only the network's layers change precision: the
# backbone and FPN, the RPN head, and the box and mask heads. Everything else (normalisation of
# the uint8 input aside, which is exact in fp16) is proposal and detection post-processing that
# stays fp32: box coordinates of a 2048-pixel image have 1-2 pixel steps in fp16, and the score
# order that NMS and the top-k follow must not change with the precision.
FP32_NODES = (r'^(?!/backbone/|/rpn/head/|/roi_heads/(box_head|box_predictor|mask_head|mask_predictor)/|/Sub$|/Div$)',)
SIZE_DIVISOR = 32  # FPN strides: every level must tile the image exactly


@dataclass(frozen=True)
class PublishedDetections:
    """What the graph keeps of the box head's detections, in network terms."""

    score_threshold: float  # scores at or above it
    max_detections: int  # the highest-scoring ones, after the class filter
    classes: Sequence[int] = ()  # network class indices to keep; empty: every class


def keep_published_detections(model: MaskRCNN, published: PublishedDetections) -> None:
    """Make ``model.roi_heads`` hand the mask head only ``published`` detections: torchvision's own
    post-processing (softmax, box decoding, per-class NMS) with the score threshold, then the class
    filter and the top ``max_detections``, in that order, so filtered-out classes never take a place."""
    heads = model.roi_heads
    # torchvision keeps scores strictly above score_thresh; the published threshold is inclusive.
    heads.score_thresh = float(np.nextafter(np.float32(published.score_threshold), np.float32(-1)))
    num_classes = heads.box_predictor.cls_score.out_features
    # Every candidate (each proposal once per class, as per-class NMS may keep it): capped after the class filter.
    heads.detections_per_img = model.rpn.post_nms_top_n() * (num_classes - 1)
    allowed = torch.zeros(num_classes, dtype=torch.bool)
    allowed[list(published.classes) or slice(None)] = True
    heads.register_buffer('published_classes', allowed, persistent=False)
    heads.max_published = published.max_detections
    heads.__class__ = PublishedRoIHeads  # a class, not a patched method: the module still pickles (export_process)


class PublishedRoIHeads(RoIHeads):
    """torchvision's box head post-processing followed by the class filter and the top
    ``max_published`` (set up by ``keep_published_detections``)."""

    published_classes: torch.Tensor
    max_published: int

    def postprocess_detections(self, class_logits, box_regression, proposals, image_shapes):
        all_boxes, all_scores, all_labels = super().postprocess_detections(class_logits, box_regression,
                                                                           proposals, image_shapes)
        kept = [self.published_classes[labels] for labels in all_labels]  # NMS left them by decreasing score
        return tuple([values[keep][:self.max_published] for values, keep in zip(all_values, kept)]
                     for all_values in (all_boxes, all_scores, all_labels))


def box_predictor_in_fp32(model: MaskRCNN) -> None:
    """Run the box predictor in fp32 under autocast (the PyTorch fp16 path): torchvision decodes
    boxes in the regression's dtype, and fp16 coordinates of a 2048-pixel image step by 1-2
    pixels. The rest of the network keeps autocast's fp16; the state dict is unchanged."""
    predictor = model.roi_heads.box_predictor
    if not isinstance(predictor, FastRCNNPredictor):
        raise TypeError(f"box_predictor_in_fp32 expects torchvision's FastRCNNPredictor, "
                        f'not {type(predictor).__name__}')
    predictor.__class__ = Fp32BoxPredictor  # a class, not a patched method: the module still pickles


class Fp32BoxPredictor(FastRCNNPredictor):
    """torchvision's box predictor, run in fp32 whatever autocast says (``box_predictor_in_fp32``)."""

    def forward(self, x: torch.Tensor):
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


class InstanceInference(nn.Module):
    """uint8 RGB (N, 3, H, W) -> boxes (N, K, 4) x1y1x2y2 in input pixels, scores (N, K),
    labels (N, K) int32 network class index, mask_probs (N, K, M, M) float, num_detections (N,) int32.

    Normalisation is torchvision's (``model.transform``); its resizing is bypassed because the
    caller already resized to the fixed input size.
    """

    def __init__(self, model: MaskRCNN) -> None:
        super().__init__()
        self.model = model.eval()
        self.max_detections = getattr(model.roi_heads, 'max_published', model.roi_heads.detections_per_img)
        self.register_buffer('mean', torch.tensor(model.transform.image_mean).view(1, 3, 1, 1) * 255,
                             persistent=False)
        self.register_buffer('std', torch.tensor(model.transform.image_std).view(1, 3, 1, 1) * 255,
                             persistent=False)

    output_names = INSTANCE_OUTPUT_NAMES

    def forward(self, images: torch.Tensor):
        height, width = images.shape[-2:]
        if not torch.jit.is_tracing() and (height % SIZE_DIVISOR or width % SIZE_DIVISOR):
            raise ValueError(f'Mask R-CNN input {height}x{width} must be a multiple of {SIZE_DIVISOR}')
        return self.detect(self.network_input(images.float()))

    def camera_forward(self, frames: torch.Tensor, input_size: Size, mark: Callable[[str], None] = no_mark):
        """uint8 camera frames (N, H, W, 3) on the device, resized there to ``input_size``; the
        outputs are ``forward``'s (boxes in network pixels). ``mark`` is called after each stage."""
        images = self.network_input(frames_at_input_size(frames, input_size))
        mark('preprocess')
        outputs = self.detect(images)
        mark('model')
        return outputs

    def network_input(self, images: torch.Tensor) -> torch.Tensor:
        """float images on 0..255 -> normalised, in the backbone's memory format."""
        normalised = (images - self.mean) / self.std
        weight = next(self.model.backbone.parameters())
        if weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous():
            return normalised.contiguous(memory_format=torch.channels_last)
        return normalised

    def detect(self, normalised: torch.Tensor):
        """Normalised images at the network input size -> the padded detection outputs."""
        height, width = normalised.shape[-2:]
        image_sizes = [(int(height), int(width))] * normalised.shape[0]
        features = self.model.backbone(normalised)
        proposals, _ = self.model.rpn(ImageList(normalised, image_sizes), features)
        detections, _ = self.model.roi_heads(features, proposals, image_sizes)
        return (
            torch.stack([self._pad(d['boxes']) for d in detections]),
            torch.stack([self._pad(d['scores']) for d in detections]),
            torch.stack([self._pad(d['labels'].to(torch.int32)) for d in detections]),
            torch.stack([self._pad(d['masks'][:, 0]) for d in detections]),
            # Counted with a sum, not len(): a traced len() would freeze into a constant.
            torch.stack([torch.ones_like(d['scores']).sum().to(torch.int32) for d in detections]),
        )

    def _pad(self, values: torch.Tensor) -> torch.Tensor:
        """Pad the detection dimension (first) with zeros up to ``max_detections``."""
        missing = self.max_detections - values.shape[0]
        padding = [0, 0] * (values.dim() - 1) + [0, missing]
        return F.pad(values, padding)
