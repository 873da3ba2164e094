"""Label sets come from cityscapesscripts, not retyped, and behave as nodes and evaluation expect."""
import numpy as np
import pytest
from cityscapesscripts.helpers.labels import labels as cityscapes_labels

from seg_models.data.labels import LabelClass, LabelSet, cityscapes, cityscapes_things, get_label_set


def test_cityscapes_has_the_19_train_classes_in_train_id_order():
    label_set = cityscapes()
    official = {label.trainId: label for label in cityscapes_labels if 0 <= label.trainId < 255}
    assert label_set.num_classes == 19 == len(official)
    for label in label_set.classes:
        assert label.name == official[label.id].name
        assert label.color == tuple(official[label.id].color)
        assert label.is_thing == official[label.id].hasInstances
    assert label_set.names[0] == 'road' and label_set.names[18] == 'bicycle'
    assert label_set.ignore_id == 255 and label_set.class_id_dtype == np.uint8


def test_cityscapes_things_are_the_8_instance_classes():
    things = cityscapes_things()
    assert things.names == ['person', 'rider', 'car', 'truck', 'bus', 'train', 'motorcycle', 'bicycle']
    assert all(label.is_thing for label in things.classes)


def test_palette_maps_ids_to_colours_and_ignore_to_black():
    label_set = cityscapes()
    palette = label_set.palette()
    assert palette.shape == (256, 3)
    assert tuple(palette[0]) == (128, 64, 128)  # road
    assert tuple(palette[255]) == (0, 0, 0)


def test_large_label_sets_use_16_bit_ids():
    classes = tuple(LabelClass(i, f'c{i}', (i % 256, 0, 0), False) for i in range(300))
    label_set = LabelSet('big', classes, ignore_id=65535)
    assert label_set.class_id_dtype == np.uint16
    assert label_set.palette().shape == (65536, 3)


def test_invalid_label_sets_are_refused():
    with pytest.raises(ValueError, match='0..N-1'):
        LabelSet('gap', (LabelClass(1, 'a', (0, 0, 0), False),))
    with pytest.raises(ValueError, match='collides'):
        LabelSet('clash', (LabelClass(0, 'a', (0, 0, 0), False),), ignore_id=0)
    with pytest.raises(ValueError, match='known: camvid, cityscapes, cityscapes_things'):
        get_label_set('nope')


def test_mapillary_vistas_v1_2_has_its_66_labels():
    import yaml

    from seg_models.data.labels import label_set_dir

    document = yaml.safe_load((label_set_dir() / 'mapillary_vistas_v1.2.yaml').read_text())
    assert len(document['classes']) == 66 and [c['id'] for c in document['classes']] == list(range(66))
    vistas = get_label_set('mapillary_vistas')
    assert vistas.num_classes == 65 and vistas.ignore_id == 65  # 'void--unlabeled' is not predicted
    assert sum(label.is_thing for label in vistas.classes) == 37  # Vistas' instance-annotated classes
    by_name = {label.name: label for label in vistas.classes}
    road = by_name['construction--flat--road']
    assert road.color == (128, 64, 128) and not road.is_thing
    assert by_name['object--vehicle--car'].is_thing and by_name['object--vehicle--car'].id == 55
    assert len({label.color for label in vistas.classes}) == 65
    # the order mmsegmentation's Vistas v1.2 models output (MapillaryDataset_v1.METAINFO, without its
    # 'Unlabeled'), which the named checkpoint deeplabv3plus_r50_d8_mapillary_vistas relies on
    assert [entry['readable'] for entry in document['classes'][:65]] == list(MMSEG_MAPILLARY_V1_CLASSES)


MMSEG_MAPILLARY_V1_CLASSES = (
    'Bird', 'Ground Animal', 'Curb', 'Fence', 'Guard Rail', 'Barrier', 'Wall', 'Bike Lane', 'Crosswalk - Plain',
    'Curb Cut', 'Parking', 'Pedestrian Area', 'Rail Track', 'Road', 'Service Lane', 'Sidewalk', 'Bridge', 'Building',
    'Tunnel', 'Person', 'Bicyclist', 'Motorcyclist', 'Other Rider', 'Lane Marking - Crosswalk',
    'Lane Marking - General', 'Mountain', 'Sand', 'Sky', 'Snow', 'Terrain', 'Vegetation', 'Water', 'Banner', 'Bench',
    'Bike Rack', 'Billboard', 'Catch Basin', 'CCTV Camera', 'Fire Hydrant', 'Junction Box', 'Mailbox', 'Manhole',
    'Phone Booth', 'Pothole', 'Street Light', 'Pole', 'Traffic Sign Frame', 'Utility Pole', 'Traffic Light',
    'Traffic Sign (Back)', 'Traffic Sign (Front)', 'Trash Can', 'Bicycle', 'Boat', 'Bus', 'Car', 'Caravan',
    'Motorcycle', 'On Rails', 'Other Vehicle', 'Trailer', 'Truck', 'Wheeled Slow', 'Car Mount', 'Ego Vehicle')


def test_coco_things_are_the_80_named_categories():
    coco = get_label_set('coco_things')
    assert coco.num_classes == 80 and coco.names[0] == 'person' and coco.names[-1] == 'toothbrush'
    assert 'N/A' not in coco.names and all(label.is_thing for label in coco.classes)


def test_label_set_files_load_and_bad_files_are_named(tmp_path):
    good = tmp_path / 'lanes.yaml'
    good.write_text('name: lanes\nclasses:\n  - {id: 0, name: lane, color: [255, 255, 0]}\n'
                    '  - {id: 1, name: curb, color: [0, 0, 255], instances: false}\n')
    assert get_label_set(str(good)).names == ['lane', 'curb']
    bad = tmp_path / 'bad.yaml'
    bad.write_text('name: bad\nclasses: [{id: 0}]\n')
    with pytest.raises(ValueError, match='bad.yaml is not usable'):
        get_label_set(str(bad))


def test_camvid_label_set_and_the_cityscapes_to_camvid_lookup():
    from seg_models.data.labels import camvid, cityscapes, label_set_lookup

    camvid_set = camvid()
    assert camvid_set.names[:4] == ['Sky', 'Building', 'Pole', 'Road'] and camvid_set.ignore_id == 11
    lookup = label_set_lookup(cityscapes(), camvid_set)
    ids = {name: index for index, name in enumerate(cityscapes().names)}
    assert lookup[ids['car']] == lookup[ids['bus']] == camvid_set.names.index('Car')
    assert lookup[ids['wall']] == camvid_set.names.index('Building')
    assert lookup[ids['train']] == lookup[255] == 11  # no CamVid class: ignored
    np.testing.assert_array_equal(label_set_lookup(camvid_set, camvid_set)[:11], np.arange(11))
