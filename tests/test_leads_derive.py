"""8-lead records (I, II, V1-V6) get III, aVR, aVL and aVF exactly (Einthoven, Goldberger)."""

import numpy as np
import pytest

from ecgjax import leads as leads_lib
from ecgjax.data import synthetic

EIGHT = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")


def test_derived_leads_by_hand():
  lead_i = np.array([1.0, 0.0, -2.0, 0.5])
  lead_ii = np.array([0.0, 1.0, 4.0, 0.5])
  x = np.concatenate([lead_i[None], lead_ii[None], np.zeros((6, 4))]).astype(np.float32)
  out, names, derived = leads_lib.derive_limb_leads(x, EIGHT)
  assert derived == ("III", "aVR", "aVL", "aVF") and names == EIGHT + derived
  got = {n: out[names.index(n)] for n in derived}
  np.testing.assert_array_equal(got["III"], [-1.0, 1.0, 6.0, 0.0])   # II - I
  np.testing.assert_array_equal(got["aVR"], [-0.5, -0.5, -1.0, -0.5])  # -(I + II) / 2
  np.testing.assert_array_equal(got["aVL"], [1.0, -0.5, -4.0, 0.25])  # I - II / 2
  np.testing.assert_array_equal(got["aVF"], [-0.5, 1.0, 5.0, 0.25])   # II - I / 2
  assert out.dtype == np.float32
  # Into the standard order: every lead present (derived leads are present leads).
  std, mask = leads_lib.reorder(out, names, leads_lib.LEADS_12)
  assert mask.all() and np.array_equal(std[0], lead_i.astype(np.float32))


def test_a_synthetic_record_gets_its_own_limb_leads_back():
  x, _, _ = synthetic.generate_record(3, 0, fs=500.0, seconds=2.0)  # exact limb leads
  keep = [leads_lib.LEADS_12.index(n) for n in EIGHT]
  out, names, _ = leads_lib.derive_limb_leads(x[keep], EIGHT)
  std, _ = leads_lib.reorder(out, names, leads_lib.LEADS_12)
  np.testing.assert_allclose(std, x, rtol=0, atol=1e-6 * float(np.abs(x[:2]).max()))


@pytest.mark.parametrize("names", [leads_lib.LEADS_12, ("I", "V1"), ("II", "III")])
def test_nothing_to_derive_or_nothing_to_derive_from(names):
  x = np.ones((len(names), 5), np.float32)
  out, got, derived = leads_lib.derive_limb_leads(x, names)
  assert derived == () and out is x and got == leads_lib.parse_leads(names)


def test_a_present_lead_is_never_overwritten():
  names = ("I", "II", "aVF")
  x = np.array([[1.0], [2.0], [7.0]], np.float32)  # aVF as stored, not II - I/2 = 1.5
  out, got, derived = leads_lib.derive_limb_leads(x, names)
  assert derived == ("III", "aVR", "aVL") and out[got.index("aVF"), 0] == 7.0
