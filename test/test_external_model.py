"""Bring your own model: a foreign ONNX file + metadata runs through our segmenter and our node."""
import cv2
import numpy as np
import pytest
import torch
from std_msgs.msg import Header

from ros_helpers import NodeProcess, ProbeNode
from shared_data import driving_frames
from seg_models.models.deeplabv3plus import deeplabv3plus
from seg_models.segmenters.semantic import SemanticModelConfig, create_semantic_segmenter
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


def _constant_logits_onnx(path, channels: int, winner: int, input_hw=('height', 'width')) -> None:
    """A 1x1 convolution with zero weights: logits equal the bias everywhere, so every pixel is ``winner``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    bias = np.zeros(channels, np.float32)
    bias[winner] = 1.0
    graph = helper.make_graph(
        [helper.make_node('Conv', ['input', 'weight', 'bias'], ['logits'])], 'constant',
        [helper.make_tensor_value_info('input', TensorProto.FLOAT, ['batch', 3, *input_hw])],
        [helper.make_tensor_value_info('logits', TensorProto.FLOAT, ['batch', channels, *input_hw])],
        [numpy_helper.from_array(np.zeros((channels, 3, 1, 1), np.float32), 'weight'),
         numpy_helper.from_array(bias, 'bias')])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)], ir_version=8), str(path))


def _metadata(folder, text: str):
    (folder / 'model.yaml').write_text(text)
    return SemanticModelConfig(model_metadata=str(folder / 'model.yaml'), input_size=None)


MEAN_STD = 'mean: [123.7, 116.3, 103.5]\nstd: [58.4, 57.1, 57.4]\n'


@pytest.mark.parametrize('channels, extra, problem', [
    (20, '', 'has 20 channels, but the label set cityscapes_things has 8 classes'),
    (9, 'void_class: 12\n', 'void_class 12 is not one of the 9 model classes'),
    (8, 'input_size: [64, 64]\n', 'input_size [64, 64] contradicts the ONNX input input, which is fixed at [32, 48]'),
])
def test_metadata_that_contradicts_the_onnx_graph_is_refused_at_start_up(tmp_path, channels, extra, problem):
    _constant_logits_onnx(tmp_path / 'm.onnx', channels, 0, input_hw=(32, 48))
    config = _metadata(tmp_path, f'onnx: m.onnx\nlabel_set: cityscapes_things\noutput: logits\n{MEAN_STD}{extra}')
    with pytest.raises(ValueError, match=problem.replace('[', r'\[').replace(']', r'\]')):
        create_semantic_segmenter(config)


def test_mean_and_std_on_the_0_1_scale_are_refused(tmp_path):
    _constant_logits_onnx(tmp_path / 'm.onnx', 8, 0)
    config = _metadata(tmp_path, 'onnx: m.onnx\nlabel_set: cityscapes_things\noutput: logits\n'
                                 'mean: [0.485, 0.456, 0.406]\nstd: [0.229, 0.224, 0.225]\n')
    with pytest.raises(ValueError, match='look like the 0-1 scale'):
        create_semantic_segmenter(config)


@pytest.mark.parametrize('content, problem', [
    ('- onnx: m.onnx\n- label_set: cityscapes\n', 'must be a mapping of fields'),
    (None, 'is not a readable ONNX model'),
], ids=['yaml_list', 'truncated_onnx'])
def test_unreadable_metadata_and_onnx_are_one_line_errors(tmp_path, content, problem):
    _constant_logits_onnx(tmp_path / 'm.onnx', 8, 0)
    (tmp_path / 'm.onnx').write_bytes((tmp_path / 'm.onnx').read_bytes()[:-40])
    text = content or f'onnx: m.onnx\nlabel_set: cityscapes_things\noutput: logits\n{MEAN_STD}'
    with pytest.raises(ValueError, match=problem) as error:
        create_semantic_segmenter(_metadata(tmp_path, text))
    assert '\n' not in str(error.value)


@pytest.mark.parametrize('winner, published', [(0, 255), (1, 0), (8, 7)])
def test_void_class_is_published_as_the_ignore_id_and_later_classes_move_down(tmp_path, winner, published):
    """A model with a background channel first (then the 8 Cityscapes things): background is unlabeled."""
    _constant_logits_onnx(tmp_path / 'm.onnx', 9, winner)
    segmenter = create_semantic_segmenter(_metadata(
        tmp_path, f'onnx: m.onnx\nlabel_set: cityscapes_things\noutput: logits\nvoid_class: 0\n{MEAN_STD}'))
    class_ids = segmenter.segment([np.zeros((24, 40, 3), np.uint8)])[0].class_ids
    assert class_ids.shape == (24, 40) and set(np.unique(class_ids)) == {published}


def test_segformer_logits_at_a_quarter_are_upsampled_bilinearly_before_the_argmax(tmp_path):
    """A SegFormer built by ``transformers`` from a config (no download), exported to ONNX: its logits
    come out at 1/4 of the input and are upsampled as logits, as upstream does, not as class ids."""
    pytest.importorskip('transformers', reason='transformers (test only) is not installed')
    import torch.nn.functional as F
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    config = SegformerConfig(num_labels=19, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
                             num_attention_heads=[1, 1, 2, 4], decoder_hidden_size=64)
    torch.manual_seed(0)
    segformer = SegformerForSemanticSegmentation(config).eval()

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.segformer = segformer

        def forward(self, pixel_values):
            return self.segformer(pixel_values=pixel_values).logits

    size = (128, 160)
    torch.onnx.export(Logits().eval(), (torch.zeros(1, 3, *size),), str(tmp_path / 'segformer.onnx'), dynamo=False,
                      opset_version=17, input_names=['pixel_values'], output_names=['logits'])
    (tmp_path / 'segformer.yaml').write_text(
        f'onnx: segformer.onnx\nlabel_set: cityscapes\ninput_size: [{size[0]}, {size[1]}]\n'
        f'mean: [123.675, 116.28, 103.53]\nstd: [58.395, 57.12, 57.375]\noutput: logits\n')
    segmenter = create_semantic_segmenter(SemanticModelConfig(model_metadata=str(tmp_path / 'segformer.yaml')))
    frame = driving_frames(1, size=size)[0]
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    normalised = (torch.from_numpy(frame).permute(2, 0, 1)[None].float() - mean) / std
    with torch.no_grad():
        logits = segformer(pixel_values=normalised).logits
    assert logits.shape[-2:] == (size[0] // 4, size[1] // 4)
    upstream = F.interpolate(logits, size=size, mode='bilinear', align_corners=False).argmax(1)[0].numpy()
    nearest_ids = F.interpolate(logits.argmax(1, keepdim=True).float(), size=size, mode='nearest')[0, 0].numpy()
    ours = segmenter.segment([frame])[0].class_ids
    assert np.mean(ours == upstream) >= 0.999
    assert np.mean(nearest_ids == upstream) < 0.99  # upsampling the ids instead would show
    # A camera larger than the input: the logits go straight to the camera's size, as upstream's
    # post_process_semantic_segmentation(target_sizes=...) takes them, not through the input's size.
    camera = driving_frames(1, size=(2 * size[0], 2 * size[1]))[0]
    network_input = cv2.resize(camera, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    with torch.no_grad():
        logits = segformer(pixel_values=(torch.from_numpy(network_input).permute(2, 0, 1)[None].float()
                                         - mean) / std).logits
    upstream = F.interpolate(logits, size=camera.shape[:2], mode='bilinear', align_corners=False).argmax(1)[0].numpy()
    through_the_input = F.interpolate(F.interpolate(logits, size=size, mode='bilinear', align_corners=False).argmax(
        1, keepdim=True).float(), size=camera.shape[:2], mode='nearest')[0, 0].numpy()
    ours = segmenter.segment([camera])[0].class_ids
    assert ours.shape == camera.shape[:2]
    assert np.mean(ours == upstream) >= 0.999
    assert np.mean(through_the_input == upstream) < np.mean(ours == upstream)
