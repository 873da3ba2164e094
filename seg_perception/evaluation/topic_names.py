"""Topic names in the bags this package makes, replays and evaluates (all configurable on the
command line, for bags recorded elsewhere)."""
CAMERA = '/camera/image_raw'
CAMERA_INFO = '/camera/camera_info'
GROUND_TRUTH_SEMANTIC = '/ground_truth/semantic'
GROUND_TRUTH_INSTANCES = '/ground_truth/instances'
GROUND_TRUTH_INFO = '/ground_truth/info'
CLOCK = '/clock'
REPLAY_SUMMARY = '/evaluation/replay_summary'

# What replay records from the nodes (their topics in the root namespace).
SEMANTIC_PREDICTION = '/segmentation/semantic'
INSTANCE_PREDICTION = '/segmentation/instances'
PREDICTIONS = (SEMANTIC_PREDICTION, INSTANCE_PREDICTION)
RECORDED_BY_DEFAULT = PREDICTIONS + (
    '/segmentation/semantic/label_info', '/segmentation/instances/label_info', '/diagnostics',
    '/semantic_segmentation/processing_time', '/instance_segmentation/processing_time')
