"""Rendering of one phantom radiograph: carrier geometry, X-ray projection of a skeleton, anomalies.

Image model (all in [0, 1] before 8-bit quantisation):

- the surround (outside the carrier) is dark and flat; the carrier is a rectangle, sometimes rotated,
  occasionally clipped by the border, whose empty background is a little lighter;
- inside it, intensity is ``base + (peak - base) * (1 - exp(-A))`` where ``A`` is the attenuation line
  integral: soft tissue (path length through soft capsules) plus bone, whose cortex (a hollow-cylinder
  shell) attenuates more than the medulla — so cortical rims come out brighter, as on real films — plus
  metal. A smooth exposure gradient, a slight blur, signal-dependent noise and a burned-in "L"/"R"
  marker follow; inverted images are ``1 - v`` (white background);
- the body mask is where the soft tissue path is > 0.5 px inside the carrier; the anomaly mask is the
  set of pixels the anomaly changes (metal, gap ∩ bone, lesion ∩ bone, moved fragment, bump).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from xrad.data.phantoms.anatomy import Bone, Skeleton, Soft

# The pixels of a window: (rows, columns) slices of the image.
Window = tuple[slice, slice]

MU_SOFT, MU_CORTEX, MU_MEDULLA, METAL = 2.0, 12.0, 3.5, 4.0  # attenuation per carrier unit; metal per px


@dataclass
class Geometry:
    """Everything about one image that the ground truth records or that places the anatomy."""

    height: int
    width: int
    centre: tuple[float, float]  # carrier centre (x, y) in pixels
    carrier: tuple[float, float]  # carrier side lengths (along its own x, along its own y) in pixels
    rotation_deg: float  # angle of the top edge TL→TR, atan2(dy, dx), y down: + = clockwise
    clipped: bool
    inverted: bool
    rgb: bool
    marker: bool
    pose: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 1.0)  # rotation deg, dx, dy, scale
    look: dict[str, float] = field(default_factory=dict)  # exposure and grey levels

    def corners(self) -> list[list[float]]:
        """Carrier corners [x, y] clockwise from top-left, in image pixel coordinates (pixel centres)."""
        cw, ch = self.carrier
        a = math.radians(self.rotation_deg)
        out = []
        for ux, uy in ((-cw / 2, -ch / 2), (cw / 2, -ch / 2), (cw / 2, ch / 2), (-cw / 2, ch / 2)):
            out.append(
                [
                    round(self.centre[0] + ux * math.cos(a) - uy * math.sin(a), 3),
                    round(self.centre[1] + ux * math.sin(a) + uy * math.cos(a), 3),
                ]
            )
        return out

    def body_to_image(self) -> tuple[np.ndarray, np.ndarray, float]:
        """Affine (A, b) mapping carrier units to pixels, and the pixels per carrier unit."""
        cw, ch = self.carrier
        long_side = max(cw, ch) * self.pose[3]
        p = math.radians(self.pose[0])
        pose = np.array([[math.cos(p), -math.sin(p)], [math.sin(p), math.cos(p)]])
        if cw > ch:  # landscape carrier: the limb's long axis runs horizontally
            pose = np.array([[0.0, -1.0], [1.0, 0.0]]) @ pose
        a = math.radians(self.rotation_deg)
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        matrix = long_side * rot @ pose
        shift = np.array(self.centre) + long_side * rot @ np.array(self.pose[1:3])
        return matrix, shift, long_side


def plan_geometry(
    size: int,
    rng: np.random.Generator,
    *,
    rotated_rate: float,
    max_rotation: float,
    clipped_rate: float,
    inverted_rate: float,
    rgb_rate: float,
    marker_rate: float,
) -> Geometry:
    """Draw the image size, carrier placement, pose and grey levels of one image."""
    aspect = rng.uniform(0.6, 1.0)
    portrait = rng.random() < 0.8
    h, w = (size, int(round(size * aspect))) if portrait else (int(round(size * aspect)), size)
    cw, ch = w * rng.uniform(0.82, 0.95), h * rng.uniform(0.82, 0.95)
    rotation = 0.0
    if rng.random() < rotated_rate:
        rotation = float(rng.choice((-1.0, 1.0)) * rng.uniform(3.0, max(3.0, max_rotation)))
    a = math.radians(rotation)
    bw, bh = cw * abs(math.cos(a)) + ch * abs(math.sin(a)), cw * abs(math.sin(a)) + ch * abs(math.cos(a))
    fit = min(1.0, (w - 4) / bw, (h - 4) / bh)
    cw, ch, bw, bh = cw * fit, ch * fit, bw * fit, bh * fit
    cx = w / 2 - 0.5 + rng.uniform(-0.8, 0.8) * (w - 4 - bw) / 2
    cy = h / 2 - 0.5 + rng.uniform(-0.8, 0.8) * (h - 4 - bh) / 2
    clipped = rotation == 0.0 and rng.random() < clipped_rate
    if clipped:  # push one edge past the image border (the opposite edge stays put)
        side, beyond = int(rng.integers(0, 4)), rng.uniform(0.03, 0.12)
        if side in (0, 1):
            lo, hi = cx - cw / 2, cx + cw / 2
            lo, hi = (-beyond * cw, hi) if side == 0 else (lo, w - 1 + beyond * cw)
            cx, cw = (lo + hi) / 2, hi - lo
        else:
            lo, hi = cy - ch / 2, cy + ch / 2
            lo, hi = (-beyond * ch, hi) if side == 2 else (lo, h - 1 + beyond * ch)
            cy, ch = (lo + hi) / 2, hi - lo
    pose = (
        float(np.clip(rng.normal(0.0, 6.0), -15, 15)),
        float(rng.uniform(-0.03, 0.03)),
        float(rng.uniform(-0.03, 0.03)),
        float(rng.uniform(0.92, 1.04)),
    )
    look = {
        "exposure": rng.uniform(0.85, 1.15),
        "base": rng.uniform(0.12, 0.24),
        "surround": rng.uniform(0.0, 0.05),
        "peak": rng.uniform(0.88, 0.97),
        "gx": rng.uniform(-0.12, 0.12),
        "gy": rng.uniform(-0.12, 0.12),
        "marker_corner": rng.random(),
    }
    return Geometry(
        h,
        w,
        (float(cx), float(cy)),
        (float(cw), float(ch)),
        rotation,
        bool(clipped),
        bool(rng.random() < inverted_rate),
        bool(rng.random() < rgb_rate),
        bool(rng.random() < marker_rate),
        pose,
        {k: float(v) for k, v in look.items()},
    )


def _window(shape: tuple[int, int], pts: np.ndarray, margin: float) -> tuple[Window, np.ndarray, np.ndarray] | None:
    """Pixel-centre grids (X, Y) of the bounding box of ``pts`` grown by ``margin``; None if off-image."""
    x0, y0 = np.floor(pts.min(axis=0) - margin).astype(int)
    x1, y1 = np.ceil(pts.max(axis=0) + margin).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, shape[1]), min(y1, shape[0])
    if x0 >= x1 or y0 >= y1:
        return None
    xs = np.arange(x0, x1, dtype=np.float32)[None, :]
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    return (slice(y0, y1), slice(x0, x1)), xs, ys


def _axis(xs: np.ndarray, ys: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clamped position ``t`` along p0→p1 and distance to the segment, for every pixel of a window."""
    d = p1 - p0
    length2 = max(float(d @ d), 1e-6)
    t = np.clip(((xs - p0[0]) * d[0] + (ys - p0[1]) * d[1]) / length2, 0.0, 1.0)
    return t, np.hypot(xs - (p0[0] + t * d[0]), ys - (p0[1] + t * d[1]))


def _chord(r: np.ndarray | float, dist: np.ndarray) -> np.ndarray:
    """Path length of a ray at distance ``dist`` from the axis through a cylinder of radius ``r``."""
    chord: np.ndarray = 2.0 * np.sqrt(np.maximum(np.square(r) - np.square(dist), 0.0))
    return chord


def bone_paths(
    shape: tuple[int, int], bone: Bone, matrix: np.ndarray, shift: np.ndarray, scale: float
) -> tuple[Window, np.ndarray, np.ndarray, np.ndarray] | None:
    """(window, cortex path, medulla path, outer path) of one bone in pixels; None when off-image."""
    p0, p1 = matrix @ np.asarray(bone.p0) + shift, matrix @ np.asarray(bone.p1) + shift
    r = bone.radius * scale
    win = _window(shape, np.stack([p0, p1]), r * (1 + max(bone.flare0, bone.flare1)) + 2)
    if win is None:
        return None
    sl, xs, ys = win
    t, dist = _axis(xs, ys, p0, p1)
    tp = bone.t0 + t * (bone.t1 - bone.t0)  # position on the parent bone (fragments keep its profile)
    zone = 0.22
    radius = r * (
        1 + bone.flare0 * np.clip(1 - tp / zone, 0, 1) ** 2 + bone.flare1 * np.clip(1 - (1 - tp) / zone, 0, 1) ** 2
    )
    outer = _chord(radius, dist)
    inner = _chord(radius * (1 - bone.cortex), dist)
    return sl, (outer - inner) * bone.density, inner * bone.density, outer


def soft_path(
    shape: tuple[int, int],
    skeleton: Skeleton,
    matrix: np.ndarray,
    shift: np.ndarray,
    scale: float,
    extra: list[Soft] | None = None,
) -> np.ndarray:
    """Soft-tissue path length (pixels): the maximum over soft capsules, so unions stay smooth."""
    out = np.zeros(shape, np.float32)
    for s in list(skeleton.soft) + list(extra or []):
        p0, p1 = matrix @ np.asarray(s.p0) + shift, matrix @ np.asarray(s.p1) + shift
        r = s.radius * scale
        win = _window(shape, np.stack([p0, p1]), r + 1)
        if win is None:
            continue
        sl, xs, ys = win
        _, dist = _axis(xs, ys, p0, p1)
        np.maximum(out[sl], _chord(r, dist), out=out[sl])
    return out


def box(
    shape: tuple[int, int], centre: np.ndarray, axis: np.ndarray, half_len: float, half_width: float
) -> tuple[Window, np.ndarray] | None:
    """Anti-aliased oriented rectangle (coverage in [0, 1]) as (window, coverage); None when off-image."""
    axis = axis / max(np.linalg.norm(axis), 1e-9)
    normal = np.array([-axis[1], axis[0]])
    pts = np.stack([centre + sa * half_len * axis + sb * half_width * normal for sa in (-1, 1) for sb in (-1, 1)])
    win = _window(shape, pts, 1.5)
    if win is None:
        return None
    sl, xs, ys = win
    u = (xs - centre[0]) * axis[0] + (ys - centre[1]) * axis[1]
    v = (xs - centre[0]) * normal[0] + (ys - centre[1]) * normal[1]
    return sl, np.clip(0.5 + np.minimum(half_len - np.abs(u), half_width - np.abs(v)), 0.0, 1.0)


def carrier_coverage(geom: Geometry) -> np.ndarray:
    """Anti-aliased carrier rectangle coverage over the whole image."""
    a = math.radians(geom.rotation_deg)
    cov = box(
        (geom.height, geom.width),
        np.array(geom.centre),
        np.array([math.cos(a), math.sin(a)]),
        geom.carrier[0] / 2,
        geom.carrier[1] / 2,
    )
    out = np.zeros((geom.height, geom.width), np.float32)
    if cov is not None:
        out[cov[0]] = cov[1]
    return out


def compose(
    geom: Geometry,
    attenuation: np.ndarray,
    carrier: np.ndarray,
    soft: np.ndarray,
    marker_letter: str,
    noise: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Turn attenuation into grey levels: exposure, carrier/surround, gradient, blur, marker, noise, inversion."""
    import cv2

    lk, (h, w) = geom.look, attenuation.shape
    xs = (np.arange(w, dtype=np.float32)[None, :] - geom.centre[0]) / max(geom.carrier[0], 1.0)
    ys = (np.arange(h, dtype=np.float32)[:, None] - geom.centre[1]) / max(geom.carrier[1], 1.0)
    gain = 1.0 + lk["gx"] * xs + lk["gy"] * ys
    inside = (lk["base"] + (lk["peak"] - lk["base"]) * (1.0 - np.exp(-lk["exposure"] * attenuation))) * gain
    v: np.ndarray = carrier * inside + (1.0 - carrier) * lk["surround"]
    sigma = 0.35 + 0.4 * max(h, w) / 256
    v = cv2.GaussianBlur(v.astype(np.float32), (0, 0), sigma)
    if geom.marker:
        v = np.maximum(v, _marker(geom, soft, marker_letter) * 0.97)
    std = noise * (0.006 + 0.018 * np.sqrt(np.clip(v, 0.0, 1.0)))
    v = v + rng.standard_normal(v.shape, dtype=np.float32) * std
    v = np.clip(v, 0.0, 1.0)
    return 1.0 - v if geom.inverted else v


def _marker(geom: Geometry, soft: np.ndarray, letter: str) -> np.ndarray:
    """A burned-in "L"/"R" glyph near the carrier corner that has the least soft tissue around it."""
    import cv2

    h, w = geom.height, geom.width
    size = max(h, w)
    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.055 * size / 22.0, max(1, round(size / 110))
    (tw, th), _ = cv2.getTextSize(letter, font, scale, thick)
    best, where = None, (0, 0)
    corners = geom.corners()
    first = int(geom.look.get("marker_corner", 0.0) * 4) % 4  # random preferred corner, ties go to it
    for cx, cy in corners[first:] + corners[:first]:
        # step 14 % of the way from the corner towards the centre: inside the carrier, clear of its edge
        x = int(np.clip(cx + 0.14 * (geom.centre[0] - cx) - tw / 2, 1, w - tw - 2))
        y = int(np.clip(cy + 0.14 * (geom.centre[1] - cy) + th / 2, th + 1, h - 2))
        load = float(soft[max(y - th - 2, 0) : y + 3, max(x - 2, 0) : x + tw + 3].sum())
        if best is None or load < best:
            best, where = load, (x, y)
    canvas = np.zeros((h, w), np.uint8)
    cv2.putText(canvas, letter, where, font, scale, 255, thick, cv2.LINE_AA)
    return canvas.astype(np.float32) / 255.0
