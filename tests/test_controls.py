"""Controls: classifier-blind masks with known properties."""

import torch

from audiointerp.features import FeatureExtractor
from audiointerp.interpreters.controls import EnergyControl, OnesControl, RandomControl


def test_random_mask_is_reproducible_and_ignores_batch_mates() -> None:
    features = FeatureExtractor()(torch.randn(3, 4000))
    control = RandomControl(seed=5)
    batch = control(features, None)
    alone = control(features[1:2], None)
    assert batch.shape == features.magnitude.shape
    assert 0 <= batch.min() and batch.max() < 1
    assert torch.equal(batch[1:2], alone)
    assert torch.equal(control(features, None), batch)
    assert not torch.equal(RandomControl(seed=6)(features, None), batch)
    assert not torch.equal(batch[0], batch[2])  # clips get different masks


def test_energy_and_ones_masks() -> None:
    waveform = torch.zeros(1, 4000)
    waveform[0, 2000:2400] = torch.randn(400)
    features = FeatureExtractor()(waveform)
    energy = EnergyControl()(features, None)
    assert set(energy.unique().tolist()) <= {0.0, 1.0}
    assert energy[0, :5].sum() == 0 and energy[0, 11:14].sum() > 0  # only where the burst is
    assert torch.equal(OnesControl()(features, None), torch.ones_like(features.magnitude))
