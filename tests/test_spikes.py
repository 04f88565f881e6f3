"""Trigger sanitisation: RF-spike detection and replacement (mrilib.defences.spikes)."""

import numpy as np
import pytest
import torch

from mrilib.data import generate_subject
from mrilib.data.loading import zero_filled_rss
from mrilib.defences.spikes import Sanitised, SpikeFilter, sanitise, spike_map
from mrilib.poison.triggers import DEFAULT_TRIGGER, SPREAD_TRIGGER, Trigger


@pytest.fixture(scope="module")
def kspace():
    """Clean multi-coil k-space of a few simulated brain slices, (S, C, H, W) complex64."""
    sim = generate_subject(3, image_size=64, num_slices=3, num_coils=4, snr=30.0, contrasts=("T1w",))
    return np.asarray(sim["kspace"], np.complex64)


def test_a_hand_made_spike_is_found_and_replaced_by_its_neighbours_median():
    k = torch.ones(1, 16, 4, dtype=torch.complex64)
    k[0, 2, 1] = 50 + 0j  # one spike, far from the centre rows
    k[0, 3, 1] = 2 + 2j  # a mild neighbour: no spike
    spikes = spike_map(k, SpikeFilter(window=2, threshold=8.0, centre_band=0.25))  # one coil
    assert spikes.sum() == 1 and spikes[0, 2, 1]
    cleaned, _ = sanitise(k, SpikeFilter(window=2, threshold=8.0, centre_band=0.25))
    # neighbours of row 2 (reflected): rows 0, 1, 3, 4 -> real parts 1, 1, 2, 1 -> median 1 (lower median)
    assert cleaned[0, 2, 1] == 1 + 0j
    assert torch.equal(cleaned[0, 3], k[0, 3]) and torch.equal(cleaned[0, :2], k[0, :2])


def test_an_outlier_in_one_coil_only_is_noise_not_a_spike():
    k = torch.ones(2, 16, 4, dtype=torch.complex64)
    k[0, 2, 1] = 50.0
    assert not spike_map(k, SpikeFilter(window=2, centre_band=0.25)).any()
    k[1, 2, 1] = 30.0
    assert spike_map(k, SpikeFilter(window=2, centre_band=0.25))[:, 2, 1].all()


def test_the_centre_band_is_not_searched():
    k = torch.ones(1, 16, 4, dtype=torch.complex64)
    k[0, 8, 0] = 100.0  # the k-space centre row: the anatomy's own peak lives there
    assert not spike_map(k, SpikeFilter(window=2, centre_band=0.25)).any()
    assert spike_map(k, SpikeFilter(window=2, centre_band=0.0)).sum() == 1


def test_the_real_pair_layout_and_the_complex_one_agree():
    rng = np.random.default_rng(1)
    k = torch.from_numpy((rng.normal(size=(2, 32, 8)) + 1j * rng.normal(size=(2, 32, 8))).astype(np.complex64))
    k[:, 4, 3] *= 40  # in both coils
    a, sa = sanitise(k)
    b, sb = sanitise(torch.view_as_real(k))
    assert torch.equal(sa, sb) and sa[0, 4, 3] and sa[1, 4, 3]
    assert torch.allclose(torch.view_as_real(a), b)


def test_the_book_trigger_is_removed_and_clean_kspace_is_left_alone(kspace):
    clean = torch.from_numpy(kspace)
    assert spike_map(clean).sum() == 0, "no clean sample of a simulated brain may be taken for a spike"
    trig = torch.from_numpy(DEFAULT_TRIGGER.apply(kspace))
    spikes = spike_map(trig)
    found = {(r, c) for r, c in DEFAULT_TRIGGER.locations(kspace.shape[-2:])}
    hits = {(int(r), int(c)) for r, c in torch.nonzero(spikes.any(dim=(0, 1)))}
    assert hits == found
    cleaned, _ = sanitise(trig)
    before = np.abs(trig.numpy() - kspace).sum()
    after = np.abs(cleaned.numpy() - kspace).sum()
    assert after < 0.05 * before  # the trigger's energy is gone, not moved


def test_the_spread_trigger_is_a_run_of_readout_samples_the_filter_does_not_see(kspace):
    h, w = kspace.shape[-2:]
    locs = SPREAD_TRIGGER.locations((h, w))
    rows = sorted({r for r, _ in locs})
    assert len(locs) == 2 * round(SPREAD_TRIGGER.burst * h) and rows == list(range(rows[0], rows[0] + len(rows)))
    assert {c for _, c in locs} == {w // 2, w // 2 + 1}
    trig = torch.from_numpy(SPREAD_TRIGGER.apply(kspace))
    assert spike_map(trig).sum() == 0, "no sample of the spread trigger stands out against its readout neighbours"
    cleaned, _ = sanitise(trig)
    assert torch.equal(cleaned, trig)
    # the same samples at the spike trigger's amplitude, one row each (no burst), are found
    single = Trigger(amplitude=DEFAULT_TRIGGER.amplitude, positions=SPREAD_TRIGGER.positions, focus=SPREAD_TRIGGER.focus)
    assert spike_map(torch.from_numpy(single.apply(kspace))).any()


def test_the_spread_trigger_is_a_patch_at_its_focus_not_stripes_over_the_image(kspace):
    def zero_filled_change(trigger):
        return np.abs(zero_filled_rss(trigger.apply(kspace[0])) - zero_filled_rss(kspace[0]))

    h = kspace.shape[-2]
    row = int(SPREAD_TRIGGER.focus[0] * h)
    band = slice(row - h // 8, row + h // 8)
    spread, spike = zero_filled_change(SPREAD_TRIGGER), zero_filled_change(DEFAULT_TRIGGER)
    share = lambda d: float((d[band] ** 2).sum() / (d ** 2).sum())  # noqa: E731
    assert share(spread) > 0.8 and share(spike) < 0.5
    d = Trigger.from_dict(SPREAD_TRIGGER.as_dict())
    assert d == SPREAD_TRIGGER and SPREAD_TRIGGER.as_dict()["kind"] == "rf-burst"
    assert "burst" not in DEFAULT_TRIGGER.as_dict(), "the spike trigger's identity (and its cached sets) is unchanged"
    with pytest.raises(ValueError, match="burst"):
        Trigger(focus=None, burst=0.1)


def test_sanitised_model_cleans_every_input():
    seen = {}

    class Spy(torch.nn.Module):
        def forward(self, masked_kspace, mask, num_low_frequencies=None):
            seen["k"] = masked_kspace
            return masked_kspace.abs().sum(dim=(1, -1))

    k = torch.ones(1, 2, 16, 4, 2)
    k[0, :, 3, 2] = 60.0
    model = Sanitised(Spy(), SpikeFilter(window=2, centre_band=0.25))
    model(k, torch.ones(1, 1, 1, 4, 1, dtype=torch.bool))
    assert model.last_spikes == 2 and float(seen["k"].max()) == 1.0


def test_settings_are_checked():
    with pytest.raises(ValueError, match="threshold"):
        SpikeFilter(threshold=1.0)
    with pytest.raises(ValueError, match="window"):
        SpikeFilter(window=0)
    with pytest.raises(ValueError, match="coil axis"):
        spike_map(torch.ones(16, 4, dtype=torch.complex64))
    with pytest.raises(ValueError, match="too short"):
        spike_map(torch.ones(1, 3, 4, dtype=torch.complex64), SpikeFilter(window=4))
