"""Augmentations: determinism, measurable effects, the alpha schedule."""

import json
import pickle

import numpy as np
import pytest

from ecgjax.data import augment


def _ecg(leads=12, n=2500, seed=0):
  """A standardised-looking record: a few sinusoids plus noise, float32."""
  rng = np.random.default_rng(seed)
  t = np.arange(n) / 250.0
  x = np.sin(2 * np.pi * 1.2 * t)[None] * rng.uniform(0.5, 2, (leads, 1))
  x += 0.3 * rng.standard_normal((leads, n))
  return x.astype(np.float32)


def _rng(seed=0):
  return np.random.default_rng(seed)


def _check(y, shape):
  assert y.shape == shape and y.dtype == np.float32 and np.isfinite(y).all()


_OPS = {
    "roll": lambda x, r: augment.roll(x, 0.1, r),
    "shift": lambda x, r: augment.shift(x, 0.1, r),
    "scale": lambda x, r: augment.amplitude_scale(x, 0.9, 1.1, r),
    "noise": lambda x, r: augment.gaussian_noise(x, 0.05, r),
    "occlusion": lambda x, r: augment.occlusion(x, 0.02, 0.1, r),
    "wander": lambda x, r: augment.baseline_wander(x, 250.0, 0.5, r),
    "lead_mask": lambda x, r: augment.random_lead_mask(x, 0.5, r)[0],
    "scheduled": lambda x, r: augment.ScheduledAugment()(x, r, 0.7),
    "randaug": augment.StMemRandAugment(),
}


@pytest.mark.parametrize("name", sorted(_OPS))
def test_ops_deterministic_float32_and_leave_input_alone(name):
  op = _OPS[name]
  x = _ecg()
  before = x.copy()
  a, b = op(x, _rng(5)), op(x, _rng(5))
  _check(a, x.shape)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(x, before)
  # float64 input still comes back float32.
  _check(op(x.astype(np.float64), _rng(5)), x.shape)
  # Some other seed gives some other view (the op is random at all).
  assert any(not np.array_equal(a, op(x, _rng(s))) for s in range(6, 30))


def test_random_lead_mask_rate_and_never_all_zero():
  x = _ecg()
  rng = _rng(1)
  kept = np.stack([augment.random_lead_mask(x, 0.5, rng)[1] for _ in range(4000)])
  assert kept.dtype == np.float32 and set(np.unique(kept)) <= {0.0, 1.0}
  assert abs((1 - kept).mean() - 0.5) < 0.02  # Drop rate ~p.
  assert (kept.sum(1) >= 1).all()
  y, k = augment.random_lead_mask(x, 0.5, _rng(2))
  np.testing.assert_array_equal(y, x * k[:, None])
  # p = 1: exactly one lead survives, chosen among the present leads.
  present = np.zeros(12, np.float32)
  present[[1, 7]] = 1
  for s in range(50):
    y, k = augment.random_lead_mask(x, 1.0, _rng(s), present=present)
    assert k.sum() == 1 and k[[1, 7]].sum() == 1
    assert np.abs(y).sum(1).astype(bool).sum() == 1
  y, k = augment.random_lead_mask(x, 0.0, _rng(0))
  np.testing.assert_array_equal(y, x)
  with pytest.raises(ValueError):
    augment.random_lead_mask(x, 1.5, _rng(0))


def test_two_segment_views_are_adjacent():
  ramp = np.tile(np.arange(5000, dtype=np.float32), (3, 1)) + np.arange(3)[:, None]
  starts = set()
  for s in range(200):
    v = augment.two_segment_views(ramp, 1000, _rng(s))
    _check(v, (2, 3, 1000))
    s0 = int(v[0, 0, 0])
    starts.add(s0)
    np.testing.assert_array_equal(v[0], ramp[:, s0:s0 + 1000])
    # seg1 starts exactly where seg0 ends.
    np.testing.assert_array_equal(v[1], ramp[:, s0 + 1000:s0 + 2000])
  assert min(starts) >= 0 and max(starts) <= 3000 and len(starts) > 100
  # ECG-FM: a 10 s record at 500 Hz -> the two 5 s halves, no randomness.
  v = augment.two_segment_views(ramp, 2500, _rng(0))
  np.testing.assert_array_equal(v[0], ramp[:, :2500])
  np.testing.assert_array_equal(v[1], ramp[:, 2500:])
  np.testing.assert_array_equal(augment.two_segment_views(ramp, 1000)[1],
                                ramp[:, 1000:2000])
  short = augment.two_segment_views(ramp[:, :1500], 1000, _rng(0))
  np.testing.assert_array_equal(short[1, :, :500], ramp[:, 1000:1500])
  assert not short[1, :, 500:].any()


def test_roll_is_a_bounded_circular_permutation():
  x = _ecg(n=1000)
  for s in range(50):
    y = augment.roll(x, 0.1, _rng(s))
    np.testing.assert_array_equal(np.sort(y, axis=1), np.sort(x, axis=1))
    k = [j for j in range(-100, 101) if np.array_equal(np.roll(x, j, 1), y)]
    assert len(k) == 1  # Some shift within +-10% of the length explains it.


def test_shift_fills_with_zeros():
  ramp = np.tile(np.arange(1, 1001, dtype=np.float32), (2, 1))
  seen = set()
  for s in range(100):
    y = augment.shift(ramp, 0.1, _rng(s))
    k = int(np.argmax(y[0] > 0)) if y[0, 0] == 0 else -int(y[0, 0] - 1)
    seen.add(np.sign(k))
    assert abs(k) <= 100
    np.testing.assert_array_equal(y[0], augment._shift_by(ramp, k)[0])
    assert (y == 0).sum(1)[0] == abs(k)
  assert seen >= {-1, 1}


def test_amplitude_scale_within_range():
  x = _ecg()
  for s in range(100):
    y = augment.amplitude_scale(x, 0.9, 1.1, _rng(s))
    ratio = y / x
    assert np.ptp(ratio) < 1e-5  # One factor for the whole record.
    assert 0.9 - 1e-6 <= ratio.mean() <= 1.1 + 1e-6


def test_occlusion_length_between_2_and_10_percent():
  x = np.ones((12, 2500), np.float32)
  lengths = []
  for s in range(300):
    y = augment.occlusion(x, 0.02, 0.1, _rng(s))
    zero = np.flatnonzero(y[0] == 0)
    assert (y == 0).all(0)[zero].all()  # Same segment on every lead.
    assert np.array_equal(zero, np.arange(zero[0], zero[-1] + 1))  # Contiguous.
    lengths.append(len(zero))
  assert 50 <= min(lengths) < 70 and 230 < max(lengths) <= 250


def test_gaussian_noise_std():
  x = np.zeros((12, 5000), np.float32)
  y = augment.gaussian_noise(x, 0.05, _rng(0))
  assert abs(y.std() - 0.05) < 0.001 and abs(y.mean()) < 0.001
  np.testing.assert_array_equal(augment.gaussian_noise(x, 0.0, _rng(0)), x)


def test_baseline_wander_is_slow_and_bounded():
  x = np.zeros((12, 5000), np.float32)
  y = augment.baseline_wander(x, 500.0, 0.5, _rng(0))
  assert 0 < np.abs(y).max() <= 2 * 0.5
  spec = np.abs(np.fft.rfft(y, axis=-1)) ** 2
  f = np.fft.rfftfreq(5000, 1 / 500)
  assert spec[:, f <= 0.6].sum() > 0.95 * spec.sum()


def test_alpha_schedule():
  assert augment.alpha(0, 100) == 1.0
  assert augment.alpha(50, 100) == pytest.approx(0.5)
  assert augment.alpha(100, 100) == pytest.approx(0.0)
  assert augment.alpha(150, 100) == pytest.approx(0.0)
  vals = [augment.alpha(e, 10) for e in range(11)]
  assert all(a >= b for a, b in zip(vals, vals[1:]))
  with pytest.raises(ValueError):
    augment.alpha(0, 0)


def test_scheduled_augment_identity_at_zero_and_strength():
  x = _ecg()
  aug = augment.ScheduledAugment()
  for s in range(20):
    np.testing.assert_array_equal(aug(x, _rng(s), alpha=0.0), x)
  np.testing.assert_array_equal(aug.at_epoch(10, 10)(x, _rng(0)), x)
  # Full strength with base_p 1: all four ops fire every time.
  y = aug(x, _rng(3), alpha=1.0)
  assert (y == 0).all(0).sum() >= 0.02 * x.shape[1]  # The occluded segment.
  # Firing rate follows alpha: at alpha 0.5 an op fires ~half the time.
  fired = [not np.array_equal(augment.ScheduledAugment(
      roll_fraction=0, scale_range=(1, 1), occlusion_range=(0, 0))(
          x, _rng(s), 0.5), x) for s in range(600)]
  assert abs(np.mean(fired) - 0.5) < 0.06
  # Noise std = alpha * noise_std, in the input's units when relative=False.
  noise_only = augment.ScheduledAugment(
      roll_fraction=0, scale_range=(1, 1), occlusion_range=(0, 0), noise_std=0.1,
      relative=False)
  z = np.zeros((12, 5000), np.float32)
  assert noise_only(z, _rng(0), 1.0).std() == pytest.approx(0.1, rel=0.02)
  stds = [noise_only(z, _rng(s), 0.5).std() for s in range(40)]
  assert max(stds) == pytest.approx(0.05, rel=0.02)
  # relative=True (default): in stds of the record, whatever its units.
  rel = augment.ScheduledAugment(
      roll_fraction=0, scale_range=(1, 1), occlusion_range=(0, 0), noise_std=0.1)
  mv = 0.2 * _ecg(n=5000) / _ecg(n=5000).std()  # A record with std 0.2 mV.
  assert (rel(mv, _rng(0), 1.0) - mv).std() == pytest.approx(0.02, rel=0.03)
  with pytest.raises(ValueError):
    aug(x, _rng(0), alpha=1.5)


def test_scheduled_augment_dict_and_pickle():
  aug = augment.ScheduledAugment(noise_std=0.1, base_p=0.8)
  d = json.loads(json.dumps(aug.to_dict()))
  assert d["scale_range"] == [0.9, 1.1]
  assert augment.ScheduledAugment.from_dict(d) == aug
  with pytest.raises(ValueError, match="unknown ScheduledAugment keys"):
    augment.ScheduledAugment.from_dict({**d, "jitter": 1})
  bound = pickle.loads(pickle.dumps(aug.at_epoch(3, 10)))
  x = _ecg()
  np.testing.assert_array_equal(bound(x, _rng(4)),
                                aug(x, _rng(4), augment.alpha(3, 10)))


def test_st_mem_randaugment_ops():
  ra = augment.StMemRandAugment()
  assert ra.ratio == pytest.approx(0.3) and ra.amplitude == pytest.approx(0.3)
  x = _ecg(n=2250)
  x = (x - x.mean()) / x.std()  # Standardised: amplitudes are absolute.
  n = x.shape[1]
  for op in augment.ST_MEM_OPS:
    _check(ra.apply(op, x, _rng(0)), x.shape)
  np.testing.assert_array_equal(ra.apply("flip", x, _rng(0)), -x)
  timeflip = augment.StMemRandAugment(flip_axis="time")
  np.testing.assert_array_equal(timeflip.apply("flip", x, _rng(0)), x[:, ::-1])
  cut = ra.apply("cutout", x, _rng(0))
  assert (cut == 0).all(0).sum() == round(0.3 * n)
  erased = ra.apply("erase", x, _rng(0))
  assert ((erased == 0).sum(1) == round(0.3 * n)).all()
  starts = [int(np.argmax(r == 0)) for r in erased]
  assert len(set(starts)) > 1  # Each lead has its own window.
  d = ra.apply("partial_white_noise", x, _rng(0)) - x
  assert (d != 0).any(0).sum() == round(0.3 * n)
  d = ra.apply("partial_sine", x, _rng(0)) - x
  assert (np.abs(d) > 1e-7).any(0).sum() <= round(0.3 * n)
  sine = ra.apply("sine", x, _rng(0)) - x
  assert 0.29 < np.abs(sine).max() <= 0.3 + 1e-5
  np.testing.assert_allclose(sine, sine[:1].repeat(12, 0), atol=1e-6)
  # Level scales the magnitudes.
  half = augment.StMemRandAugment(level=5)
  assert half.ratio == pytest.approx(0.15)
  with pytest.raises(ValueError):
    augment.StMemRandAugment(ops=("shift", "twist"))


def test_st_mem_randaugment_draws_two_distinct_ops_half_the_time():
  ra = augment.StMemRandAugment()
  x = _ecg(n=2250)
  changed = [not np.array_equal(ra(x, _rng(s)), x) for s in range(400)]
  # P(neither of the two ops fires) = 0.25.
  assert abs(1 - np.mean(changed) - 0.25) < 0.06
  always = augment.StMemRandAugment(prob=1.0, ops=("flip", "cutout"))
  y = always(x, _rng(0))
  cut = (y == 0).all(0)
  np.testing.assert_array_equal(y[:, ~cut], -x[:, ~cut])  # Both, once each.
  assert augment.StMemRandAugment(prob=0.0)(x, _rng(0)).tobytes() == x.tobytes()
  rt = augment.StMemRandAugment.from_dict(json.loads(json.dumps(ra.to_dict())))
  assert rt == ra


def test_compose_and_op():
  x = _ecg()
  chain = augment.Compose([
      augment.Op(augment.roll, max_fraction=0.1),
      augment.Op(augment.random_lead_mask, p=0.5),
      augment.ScheduledAugment().at(0.5),
      augment.StMemRandAugment(),
  ])
  chain = pickle.loads(pickle.dumps(chain))
  a = chain(x, _rng(9))
  _check(a, x.shape)
  np.testing.assert_array_equal(a, chain(x, _rng(9)))
  r = _rng(1)
  manual = augment.gaussian_noise(augment.roll(x, 0.1, r), 0.05, r)
  np.testing.assert_array_equal(
      augment.Compose([augment.Op(augment.roll, max_fraction=0.1),
                       augment.Op(augment.gaussian_noise, std=0.05)])(x, _rng(1)),
      manual)
  assert "roll" in repr(chain)


@pytest.mark.parametrize("make", [
    lambda: augment.ScheduledAugment().at(0.8),
    lambda: augment.StMemRandAugment(prob=1.0, num_ops=3),
], ids=["scheduled", "randaug"])
def test_recipes_mean_the_same_before_and_after_standardising(make):
  """Scale-equivariant: augmenting mV then z-scoring == z-scoring then augmenting."""
  aug = make()
  x = _ecg()
  mv = 0.15 * x  # The same record in physical units.
  for s in range(30):
    a = aug(mv, _rng(s))
    b = aug(x, _rng(s))
    np.testing.assert_allclose(a / 0.15, b, atol=1e-4)
