"""Instance ids that persist across a camera's frames: ``MaskTracker`` (ByteTrack's two stages on the
IoU of box-cropped masks, a constant-velocity prediction of each track's box), one per camera."""
from seg_models.tracking.mask_tracker import MaskTracker, box_iou_matrix, mask_iou_matrix

__all__ = ['MaskTracker', 'box_iou_matrix', 'mask_iou_matrix']
