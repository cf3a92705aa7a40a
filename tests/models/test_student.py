"""Student networks: keypoints, bounds, sizes."""

from __future__ import annotations

import pytest
import torch

from models.student import ConvStudent, MLPStudent, SpatialSoftmax

LOW, HIGH = torch.tensor([-3.0, 0.0]), torch.tensor([3.0, 1.0])


def test_spatial_softmax_finds_a_hot_spot_in_image_coordinates():
    maps = torch.full((1, 2, 5, 4), -1e4)
    maps[0, 0, 0, 3] = 0.0  # channel 0: top row, rightmost column -> x = 1, y = -1
    maps[0, 1, 2, 0] = 0.0  # channel 1: middle row, leftmost column -> x = -1, y = 0
    points = SpatialSoftmax(5, 4)(maps)
    torch.testing.assert_close(points, torch.tensor([[1.0, -1.0, -1.0, 0.0]]))
    # A flat map has its expectation at the centre.
    torch.testing.assert_close(SpatialSoftmax(3, 3)(torch.zeros(1, 1, 3, 3)), torch.zeros(1, 2))


def test_students_act_within_the_bounds_and_stay_small():
    torch.manual_seed(0)
    conv = ConvStudent((84, 84, 9), 2, LOW, HIGH)
    obs = {"pixels": torch.randint(0, 256, (5, 84, 84, 9), dtype=torch.uint8), "proprio": torch.randn(5, 2) * 100}
    action = conv(obs)
    assert action.shape == (5, 2)
    assert bool(((action >= LOW) & (action <= HIGH)).all())
    # 16 channels and 48-48 hidden (distill's default): about 10k parameters, over 20x fewer than the
    # stage-2 pixel teacher (206k).
    assert sum(p.numel() for p in conv.parameters()) < 10_300
    mlp = MLPStudent(4, LOW, HIGH, hidden=(8,))
    assert mlp({"state": torch.randn(3, 4) * 1e3}).abs().max() <= 3.0


def test_conv_student_refuses_a_downsample_that_leaves_no_image():
    with pytest.raises(ValueError, match="downsample is 8"):
        ConvStudent((84, 84, 9), 0, LOW, HIGH, downsample=8)


@pytest.mark.parametrize("downsample", [1, 2, 3])
def test_inference_form_folds_pooling_and_scaling_into_the_first_conv_exactly(downsample):
    torch.manual_seed(downsample)
    student = ConvStudent((84, 84, 9), 2, LOW, HIGH, downsample=downsample).eval()
    obs = {"pixels": torch.randint(0, 256, (4, 84, 84, 9), dtype=torch.uint8), "proprio": torch.randn(4, 2)}
    folded = student.inference_form()
    assert folded.input_folded and not student.input_folded  # a new module; the trained one is untouched
    assert isinstance(folded.pool, torch.nn.Identity)
    first = folded.conv[0]
    assert isinstance(first, torch.nn.Conv2d)
    assert first.kernel_size == (3 * downsample, 3 * downsample) and first.stride == (2 * downsample, 2 * downsample)
    torch.testing.assert_close(student.normalized(obs), folded.normalized(obs), atol=1e-5, rtol=0)
    assert folded.inference_form() is folded
