"""The image contract: what every ECG printout becomes before a 2-D model sees it.

`ImagePreprocessing.prepare(pixels)` runs EIANet's preprocessing (SPEC.md section 6) on the
decoded picture at its own resolution, each step switchable so the paper's "raw image" arm is
every step off, then fits it into (height, width) with its aspect ratio kept and white padding:

  1. threshold   Gaussian blur, then a threshold to binary, taken on the ink map
                 255 - max(R, G, B): a black trace is dark in every channel while a red, pink
                 or green grid line is bright in at least one, so coloured grids fall on the
                 paper side; grey grids are lighter than the trace and fall there too.
  2. components  connected components of the ink (one-pixel gaps bridged) whose bounding box
                 is small in BOTH directions (lead names, header text, specks) are removed; a
                 trace is long.
  3. opening     3x3 morphological opening of the paper (erosion then dilation of the white
                 side): closes one-pixel gaps in the trace and removes isolated white holes.
  4. blur        Gaussian blur (3x3)
  5. grayscale   (a no-op after step 1; applied to the RGB picture when step 1 is off)
  6. equalize    histogram equalisation
  7. binarize    binary again (Otsu), as the paper's last step.

The output is float32 (height, width, channels) in [0, 1], paper white = 1. OpenCV does the
image work; it is imported on first use so the data layer stays light.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from ecgjax import errors

STAGES = ("threshold", "components", "opening", "blur", "grayscale", "equalize", "binarize")


@dataclasses.dataclass(frozen=True)
class ImagePreprocessing:
  """Input size, aspect handling and EIANet's switchable stages (module docstring)."""
  height: int = 512
  width: int = 724  # A4 landscape's aspect (297 x 210 mm) at 512 rows
  channels: int = 1  # 1 (grayscale / binary) or 3 (RGB; only with every stage off)
  aspect: str = "pad"  # pad: keep the aspect ratio, pad with paper white | stretch
  threshold: bool = True
  components: bool = True
  opening: bool = True
  blur: bool = True
  grayscale: bool = True
  equalize: bool = True
  binarize: bool = True
  blur_kernel: int = 3  # Gaussian kernel (pixels, odd) of steps 1 and 4
  component_frac: float = 0.03  # step 2 removes a component whose box is under this
                                # fraction of the height AND of the width

  def __post_init__(self):
    if not (self.height > 0 and self.width > 0):
      raise ValueError(f"height and width must be > 0, got {self.height}x{self.width}")
    if self.channels not in (1, 3):
      raise ValueError(f"channels must be 1 or 3, got {self.channels}")
    if self.aspect not in ("pad", "stretch"):
      raise ValueError(f"aspect must be 'pad' or 'stretch', got {self.aspect!r}")
    if self.channels == 3 and any(getattr(self, s) for s in STAGES):
      raise ValueError("channels=3 keeps the RGB picture: switch every stage off (the raw "
                       "arm) or use channels=1")
    if self.blur_kernel < 1 or self.blur_kernel % 2 == 0:
      raise ValueError(f"blur_kernel must be odd and >= 1, got {self.blur_kernel}")
    if not 0 <= self.component_frac < 1:
      raise ValueError(f"component_frac must be in [0, 1), got {self.component_frac}")

  def to_dict(self) -> dict[str, Any]:
    """JSON-able dict (stored in exports; "modality": "image" tells it from a signal
    contract)."""
    return {"modality": "image", **dataclasses.asdict(self)}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> ImagePreprocessing:
    """Inverse of to_dict; unknown keys are an error."""
    d = {k: v for k, v in d.items() if k != "modality"}
    errors.check_keys("ImagePreprocessing", d, (f.name for f in dataclasses.fields(cls)))
    return cls(**d)

  def stages(self, pixels: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """[(name, uint8 picture)]: the input, each stage that is on (at the picture's own
    resolution, as the paper), then the picture fitted into (height, width)."""
    import cv2  # pylint: disable=g-import-not-at-top
    img = np.asarray(pixels, np.uint8)
    if img.ndim == 2:
      img = np.repeat(img[..., None], 3, -1)
    out = [("input", img)]
    k = (self.blur_kernel, self.blur_kernel)
    cur = img  # RGB until a stage makes it one channel
    gray = lambda: _gray(cur)  # noqa: E731
    if self.threshold:
      cur = 255 - _trace_binary(img, k)
      out.append(("threshold", cur))
    if self.components:
      cur = _drop_small_components(gray(), self.component_frac)
      out.append(("components", cur))
    if self.opening:
      cur = cv2.morphologyEx(gray(), cv2.MORPH_OPEN,
                             np.ones((3, 3), np.uint8))
      out.append(("opening", cur))
    if self.blur:
      cur = cv2.GaussianBlur(cur, k, 0)
      out.append(("blur", cur))
    if self.grayscale:
      cur = gray()
      out.append(("grayscale", cur))
    if self.equalize:
      cur = cv2.equalizeHist(gray())
      out.append(("equalize", cur))
    if self.binarize:
      _, cur = cv2.threshold(gray(), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
      out.append(("binarize", cur))
    fitted = fit(cur, self.height, self.width, self.aspect)
    if self.channels == 1:
      fitted = _gray(fitted)
      if self.binarize:  # resizing greys the edges; the output stays binary
        fitted = np.where(fitted < 128, 0, 255).astype(np.uint8)
    out.append(("fitted", fitted))
    return out

  def fitted(self, pixels: np.ndarray) -> np.ndarray:
    """A decoded picture (H, W, 3) uint8 -> uint8 (height, width, channels): every stage, then
    the fit (what fine-tuning stores once per record: a quarter of the float32 bytes)."""
    img = self.stages(pixels)[-1][1]
    return img if img.ndim == 3 else img[..., None]

  @staticmethod
  def finish(img: np.ndarray) -> np.ndarray:
    """uint8 (height, width, channels) -> the model's float32 input in [0, 1]."""
    return np.asarray(img, np.float32) / 255.0

  def prepare(self, pixels: np.ndarray) -> np.ndarray:
    """A decoded picture (H, W, 3) uint8 -> float32 (height, width, channels) in [0, 1]."""
    return self.finish(self.fitted(pixels))

  def fitted_record(self, record: Mapping[str, Any]) -> np.ndarray:
    """A record's fitted uint8 picture (height, width, channels): from its `pixels`, or as
    stored when it was prepared (fine-tuning's memory, `prepared:DIR`) under this very
    contract; a record prepared under another contract is an error, not a second pass."""
    done = record.get("prepared")
    if done is not None:
      ours = self.to_dict()
      if done != ours:
        diff = sorted(k for k in set(done) | set(ours) if done.get(k) != ours.get(k))
        raise errors.ContractMismatchError(
            f"record {record.get('record_id')!r} was prepared with another image contract "
            f"(differs in {', '.join(diff)}); prepare it again with this one or read the "
            "original images")
      return np.asarray(record["pixels"], np.uint8)
    if "pixels" not in record:
      raise ValueError(f"record {record.get('record_id')!r} has no pixels: an image contract "
                       "reads image sources (image:DIR), not signals")
    return self.fitted(record["pixels"])

  def prepare_record(self, record: Mapping[str, Any]) -> np.ndarray:
    """A record's model input, float32 (height, width, channels) (see `fitted_record`)."""
    return self.finish(self.fitted_record(record))


@dataclasses.dataclass(frozen=True)
class PageJitter:
  """Training augmentation for printouts: the page placed as scans and photos of paper place
  it, a random shift (fraction of each side), scale and small rotation of the fitted picture,
  white filled, nearest-neighbour so a binary picture stays binary. Applied after the
  preprocessing, to the model's float input (H, W, C)."""
  shift: float = 0.03
  scale: float = 0.05  # zoom in U(1 - scale, 1 + scale)
  rotate_deg: float = 1.0

  is_image = True  # tells the pipeline this augments pictures, not signals

  def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import cv2  # pylint: disable=g-import-not-at-top
    h, w = x.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(-1, 1) * self.rotate_deg),
                                float(1 + rng.uniform(-1, 1) * self.scale))
    m[0, 2] += rng.uniform(-1, 1) * self.shift * w
    m[1, 2] += rng.uniform(-1, 1) * self.shift * h
    out = cv2.warpAffine(np.ascontiguousarray(x, np.float32), m, (w, h),
                         flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=(1.0, 1.0, 1.0))
    return out.reshape(x.shape)


PRESETS = {
    "eianet": ImagePreprocessing(),
    "raw": ImagePreprocessing(channels=3, **{s: False for s in STAGES}),
}


def preset(name: str, **overrides: Any) -> ImagePreprocessing:
  """The named image preprocessing (eianet: every stage on; raw: none, RGB) with overrides."""
  if name not in PRESETS:
    raise ValueError(f"unknown image preprocessing preset {name!r}; known: "
                     f"{', '.join(sorted(PRESETS))}")
  return dataclasses.replace(PRESETS[name], **overrides)


def _gray(img: np.ndarray) -> np.ndarray:
  import cv2  # pylint: disable=g-import-not-at-top
  return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


def fit(img: np.ndarray, height: int, width: int, aspect: str = "pad") -> np.ndarray:
  """Resizes (H, W[, 3]) uint8 into (height, width[, 3]): aspect kept and centred on paper
  white ("pad"), or stretched. Area interpolation when shrinking (thin traces stay grey
  rather than vanish), cubic when enlarging."""
  import cv2  # pylint: disable=g-import-not-at-top
  img = np.asarray(img, np.uint8)
  if img.ndim == 2:
    img = np.repeat(img[..., None], 3, -1)
  h, w = img.shape[:2]
  if aspect == "stretch":
    th, tw = height, width
  else:
    scale = min(height / h, width / w)
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
  interp = cv2.INTER_AREA if th < h else cv2.INTER_CUBIC
  small = cv2.resize(img, (tw, th), interpolation=interp)
  out = np.full((height, width, 3), 255, np.uint8)
  top, left = (height - th) // 2, (width - tw) // 2
  out[top:top + th, left:left + tw] = small
  return out


def _trace_binary(img: np.ndarray, kernel: tuple[int, int]) -> np.ndarray:
  """RGB printout -> uint8 ink mask (255 = trace). Ink = 255 - max(R, G, B) (a coloured grid
  line is bright in one channel, the black trace in none), blurred; the threshold is the larger
  of Otsu's and half the trace's darkness (the 99.5th percentile of ink, a trace being a few
  percent of a page), so a grid that fills more of the page than the trace never wins."""
  import cv2  # pylint: disable=g-import-not-at-top
  ink = cv2.GaussianBlur(255 - img.max(-1), kernel, 0)
  otsu, _ = cv2.threshold(ink, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
  t = max(float(otsu), 0.5 * float(np.percentile(ink, 99.5)))
  return np.where(ink > t, 255, 0).astype(np.uint8)


def _drop_small_components(gray: np.ndarray, frac: float) -> np.ndarray:
  """White-paper picture -> the same with the small ink components painted white. Components
  are found with one-pixel gaps bridged (a 3x3 dilation), so a thin trace that thresholding
  broke into pieces stays one long component while a lead name stays small."""
  import cv2  # pylint: disable=g-import-not-at-top
  ink = (gray < 128).astype(np.uint8)
  bridged = cv2.dilate(ink, np.ones((3, 3), np.uint8))
  _, labels, stats, _ = cv2.connectedComponentsWithStats(bridged, connectivity=8)
  h, w = gray.shape
  small = (stats[:, cv2.CC_STAT_WIDTH] < frac * w) & (stats[:, cv2.CC_STAT_HEIGHT] < frac * h)
  small[0] = False  # label 0 is the paper
  out = gray.copy()
  out[small[labels] & (ink > 0)] = 255
  return out
