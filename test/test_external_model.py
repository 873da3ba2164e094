"""Bring your own model: a foreign ONNX file + metadata runs through our segmenter and our node."""
import numpy as np
import pytest
import torch
from std_msgs.msg import Header

from ros_helpers import NodeProcess, ProbeNode, driving_frames
from seg_models.models.deeplabv3plus import deeplabv3plus
from seg_models.semantic import SemanticModelConfig, create_semantic_segmenter
from seg_perception.messages.images import array_to_image_msg, output_msg_to_array

BGR_MEAN = (103.5, 116.3, 123.7)
BGR_STD = (57.4, 57.1, 58.4)
INPUT_SIZE = (96, 128)


class BgrLogitsModel(torch.nn.Module):
    """What people export from other frameworks: normalised BGR float in, logits out."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.network = deeplabv3plus('mobilenet_v3_large', 19).eval()

    def forward(self, images):
        return self.network(images)


@pytest.fixture(scope='module')
def external_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp('byo')
    model = BgrLogitsModel().eval()
    torch.onnx.export(model, (torch.zeros(1, 3, *INPUT_SIZE),), str(folder / 'segformer_like.onnx'), dynamo=False,
                      opset_version=17, input_names=['input'], output_names=['logits'])
    (folder / 'model.yaml').write_text(
        'onnx: segformer_like.onnx\nlabel_set: cityscapes\n'
        f'input_size: [{INPUT_SIZE[0]}, {INPUT_SIZE[1]}]\nmean: {list(BGR_MEAN)}\nstd: {list(BGR_STD)}\n'
        'channel_order: bgr\noutput: logits\n')
    return model, folder / 'model.yaml'


def reference_ids(model, rgb):
    import cv2

    resized = cv2.resize(rgb, (INPUT_SIZE[1], INPUT_SIZE[0]), interpolation=cv2.INTER_LINEAR)
    bgr = torch.from_numpy(resized[:, :, ::-1].copy()).permute(2, 0, 1)[None].float()
    normalised = (bgr - torch.tensor(BGR_MEAN).view(1, 3, 1, 1)) / torch.tensor(BGR_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ids = model(normalised).argmax(1)[0].numpy().astype(np.uint8)
    return cv2.resize(ids, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)


def test_external_onnx_matches_its_source_model(external_model):
    model, metadata = external_model
    segmenter = create_semantic_segmenter(SemanticModelConfig(model_metadata=str(metadata), with_confidence=True))
    assert segmenter.backend.name.startswith('onnxruntime') and segmenter.label_set.name == 'cityscapes'
    frames = driving_frames(2)
    for frame, result in zip(frames, segmenter.segment(frames)):
        assert np.mean(result.class_ids == reference_ids(model, frame)) >= 0.995
        assert result.class_ids.shape == frame.shape[:2] and result.confidence.max() <= 1.0


def test_bad_metadata_names_every_problem(tmp_path):
    (tmp_path / 'model.yaml').write_text('onnx: missing.onnx\nmean: [1, 2]\noutput: probabilities\n')
    with pytest.raises(ValueError) as error:
        create_semantic_segmenter(SemanticModelConfig(model_metadata=str(tmp_path / 'model.yaml')))
    for problem in ('missing.onnx not found', 'mean: three numbers', 'std: three numbers', 'output: one of',
                    'label_set: missing'):
        assert problem in str(error.value)


@pytest.mark.ros
def test_the_semantic_node_serves_an_external_model(external_model, tmp_path):
    model, metadata = external_model
    frame = driving_frames(1)[0]
    with NodeProcess('seg_perception.nodes.semantic_segmentation',
                     ['-r', 'image:=/byo/image', '-p', f'model_metadata:={metadata}',
                      '-p', 'input_reliability:=reliable'], tmp_path / 'node.log') as node:
        probe = ProbeNode('byo_probe')
        try:
            from sensor_msgs.msg import Image
            from seg_perception.messages.topics import OUTPUT_QOS

            received = []
            publisher = probe.node.create_publisher(Image, '/byo/image', OUTPUT_QOS)
            probe.node.create_subscription(Image, '/segmentation/semantic', received.append, OUTPUT_QOS)
            assert probe.spin_until(lambda: publisher.get_subscription_count() > 0, 90), node.output()
            publisher.publish(array_to_image_msg(frame, 'rgb8', Header(frame_id='byo_camera')))
            assert probe.spin_until(lambda: received, 30), node.output()
        finally:
            probe.close()
    labels = output_msg_to_array(received[0])
    assert received[0].header.frame_id == 'byo_camera'
    assert np.mean(labels == reference_ids(model, frame)) >= 0.995
