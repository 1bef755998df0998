"""Planted anomalies of the phantom radiographs, and the assembly of one rendered view.

Kinds (``anomaly_type`` in the ground truth), from obvious to subtle at ``difficulty`` 1:

- ``plate``: a metal plate along a long bone with 2–6 screws across it — bright, large: easy;
- ``screws``: 1–3 screws across a bone, or a thin K-wire along it — bright but small;
- ``fracture_gap``: a dark band across a bone (the cortex interrupted), usually with soft-tissue swelling;
- ``displaced_fragment``: the bone broken with its distal fragment shifted and angled;
- ``lesion``: a faint localised density change (lytic or sclerotic) inside a bone — hard;
- ``cortical_bump``: a small periosteal bump on the cortex — hard.

``strength = 1 / difficulty`` multiplies contrasts (metal attenuation, gap depth, lesion amplitude)
and, through its square root, sizes. A study's anomaly is drawn once (kind, bone, position along the
bone, side, angle) and rendered in each of its views at the corresponding place; the site is chosen
so that it lies inside the carrier in every view, hence every image of a positive study shows it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from xrad.data.phantoms.anatomy import Bone, Skeleton, Soft
from xrad.data.phantoms.render import (
    METAL,
    MU_CORTEX,
    MU_MEDULLA,
    MU_SOFT,
    Geometry,
    Window,
    bone_paths,
    box,
    carrier_coverage,
    compose,
    soft_path,
)

ANOMALY_TYPES: tuple[str, ...] = ("plate", "screws", "fracture_gap", "displaced_fragment", "lesion", "cortical_bump")


@dataclass
class AnomalySpec:
    """One study's anomaly: ``kind`` on bone index ``bone`` at fraction ``t`` of its length."""

    kind: str
    bone: int
    t: float
    side: float
    angle: float
    params: dict[str, float] = field(default_factory=dict)


def choose_site(
    kind: str, skeletons: list[Skeleton], geoms: list[Geometry], rng: np.random.Generator
) -> tuple[int, float]:
    """Pick (bone, t), favouring large bones, such that the site lies inside the carrier in every view."""
    bones = skeletons[0].bones
    ok = [i for i, b in enumerate(bones) if b.long or (kind == "lesion" and b.density >= 0.9)]
    weights = np.array([bones[i].radius ** 2 for i in ok])
    best, best_margin = (ok[int(np.argmax(weights))], 0.5), -np.inf
    for _ in range(80):
        i, t = ok[int(rng.choice(len(ok), p=weights / weights.sum()))], float(rng.uniform(0.25, 0.75))
        margin = min(_site_margin(sk.bones[i].point(t), g) for sk, g in zip(skeletons, geoms))
        if margin > 0.0:
            return i, t
        if margin > best_margin:
            best, best_margin = (i, t), margin
    return best


def _site_margin(point: np.ndarray, geom: Geometry) -> float:
    """How far (pixels) a body point falls inside the visible carrier, less a safety margin (< 0: outside)."""
    matrix, shift, _ = geom.body_to_image()
    x, y = matrix @ point + shift
    a = math.radians(geom.rotation_deg)
    dx, dy = x - geom.centre[0], y - geom.centre[1]
    u, v = dx * math.cos(a) + dy * math.sin(a), -dx * math.sin(a) + dy * math.cos(a)
    inner = min(geom.carrier[0] / 2 - abs(u), geom.carrier[1] / 2 - abs(v)) - 0.08 * min(geom.carrier)
    margin: float = min(inner, x - 6, y - 6, geom.width - 7 - x, geom.height - 7 - y)
    return margin


def sample_spec(kind: str, skeletons: list[Skeleton], geoms: list[Geometry], rng: np.random.Generator) -> AnomalySpec:
    """Draw a study's anomaly of ``kind``: site, side, angle and the kind's own parameters."""
    bone, t = choose_site(kind, skeletons, geoms, rng)
    params = {
        "u1": float(rng.random()),
        "u2": float(rng.random()),
        "u3": float(rng.random()),
        "swelling": float(rng.random() < 0.8),
    }
    return AnomalySpec(kind, bone, t, float(rng.choice((-1.0, 1.0))), float(rng.uniform(-30, 30)), params)


def _perp(v: np.ndarray) -> np.ndarray:
    return np.array([-v[1], v[0]]) / max(float(np.linalg.norm(v)), 1e-9)


def _rot(v: np.ndarray, deg: float) -> np.ndarray:
    a = math.radians(deg)
    rotated: np.ndarray = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) @ v
    return rotated


def render_view(
    skeleton: Skeleton,
    geom: Geometry,
    spec: AnomalySpec | None,
    strength: float,
    noise: float,
    letter: str,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Render one view: (uint8 image (H, W) or (H, W, 3) when RGB-encoded, body mask, anomaly mask)."""
    shape = (geom.height, geom.width)
    matrix, shift, scale = geom.body_to_image()
    cortex, medulla = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    metal, amask = np.zeros(shape, np.float32), np.zeros(shape, bool)
    extra_soft: list[Soft] = []
    for i, bone in enumerate(skeleton.bones):
        if spec is not None and i == spec.bone:
            extra_soft += _plant(
                spec, bone, skeleton, shape, matrix, shift, scale, strength, cortex, medulla, metal, amask
            )
            continue
        paths = bone_paths(shape, bone, matrix, shift, scale)
        if paths is not None:
            cortex[paths[0]] += paths[1]
            medulla[paths[0]] += paths[2]
    soft = soft_path(shape, skeleton, matrix, shift, scale, extra_soft)
    attenuation = (MU_SOFT * soft + MU_CORTEX * cortex + MU_MEDULLA * medulla) * (skeleton.phys / scale)
    attenuation += METAL * metal
    carrier = carrier_coverage(geom)
    pixels = compose(geom, attenuation, carrier, soft, letter, noise, rng)
    image = np.rint(pixels * 255.0).astype(np.uint8)
    if geom.rgb:  # RGB-encoded greyscale, as some MURA files are
        image = np.repeat(image[:, :, None], 3, axis=2)
    inside = carrier > 0.5
    body = (soft > 0.5) & inside
    return image, body, (amask & inside) if spec is not None else None


def _plant(
    spec: AnomalySpec,
    bone: Bone,
    skeleton: Skeleton,
    shape: tuple[int, int],
    matrix: np.ndarray,
    shift: np.ndarray,
    scale: float,
    strength: float,
    cortex: np.ndarray,
    medulla: np.ndarray,
    metal: np.ndarray,
    amask: np.ndarray,
) -> list[Soft]:
    """Render ``bone`` carrying the anomaly into the accumulators; return extra soft tissue (swelling)."""
    k, size_k = spec.kind, math.sqrt(strength)
    site = matrix @ bone.point(spec.t) + shift
    axis = matrix @ (np.asarray(bone.p1) - np.asarray(bone.p0))
    axis = axis / max(float(np.linalg.norm(axis)), 1e-9)
    normal = _perp(axis)
    r_px = bone.radius * scale
    if k == "displaced_fragment":
        _displaced(spec, bone, shape, matrix, shift, scale, strength, cortex, medulla, amask)
    else:
        paths = bone_paths(shape, bone, matrix, shift, scale)
        if paths is not None:
            sl, cort, med, outer = paths
            mult = np.ones_like(cort)
            if k == "fracture_gap":
                n = _rot(axis, spec.angle)  # the gap line is perpendicular to n: oblique across the bone
                s = (np.arange(sl[1].start, sl[1].stop)[None, :] - site[0]) * n[0] + (
                    np.arange(sl[0].start, sl[0].stop)[:, None] - site[1]
                ) * n[1]
                half = max(0.9 * r_px, 0.02 * max(shape)) * size_k / 2
                band = np.clip(0.5 + (half - np.abs(s)), 0.0, 1.0)
                mult = 1.0 - min(0.95, 0.9 * strength) * band
                amask[sl] |= (band > 0.5) & (outer > 0.5)
            elif k == "lesion":
                centre = site + normal * spec.side * 0.25 * r_px
                xs = np.arange(sl[1].start, sl[1].stop)[None, :] - centre[0]
                ys = np.arange(sl[0].start, sl[0].stop)[:, None] - centre[1]
                u, v = xs * axis[0] + ys * axis[1], xs * normal[0] + ys * normal[1]
                rho2 = (u / (1.1 * r_px * size_k)) ** 2 + (v / (0.55 * r_px * size_k)) ** 2
                sign = -1.0 if spec.params["u1"] < 0.6 else 1.0  # lytic more often than sclerotic
                mult = 1.0 + sign * min(0.9, 0.45 * strength) * np.exp(-2.0 * rho2)
                amask[sl] |= (rho2 < 1.0) & (outer > 0.5)
            cortex[sl] += cort * mult
            medulla[sl] += med * mult
    if k == "plate":
        half_len = bone.length * scale * (0.2 + 0.12 * spec.params["u1"])
        centre = site + normal * spec.side * 0.5 * r_px
        _metal(
            box(shape, centre, axis, half_len, max(1.5, 0.6 * r_px, 0.008 * max(shape)) * size_k),
            strength,
            metal,
            amask,
        )
        n_screws = int(np.clip(round(2 * half_len / (2.2 * r_px)), 2, 6))
        for offset in np.linspace(-0.8, 0.8, n_screws) * half_len:
            _screw(shape, site + axis * offset, normal, r_px, size_k, strength, spec.side, metal, amask)
    elif k == "screws":
        if spec.params["u2"] < 0.3:  # a K-wire: a thin pin along the bone
            centre = site + normal * spec.side * 0.2 * r_px
            _metal(
                box(
                    shape, centre, _rot(axis, spec.angle / 6), bone.length * scale * 0.2, max(0.8, 0.18 * r_px * size_k)
                ),
                strength,
                metal,
                amask,
            )
        else:
            n_screws = 1 + int(spec.params["u1"] * 3)
            for offset in (np.arange(n_screws) - (n_screws - 1) / 2) * 2.0 * r_px:
                _screw(
                    shape,
                    site + axis * offset,
                    _rot(normal, spec.angle * 0.8),
                    r_px,
                    size_k,
                    strength,
                    spec.side,
                    metal,
                    amask,
                )
    elif k == "cortical_bump":
        centre = bone.point(spec.t) + spec.side * (bone.radius * 0.95) * _perp(
            np.asarray(bone.p1) - np.asarray(bone.p0)
        )
        direction = (np.asarray(bone.p1) - np.asarray(bone.p0)) / max(bone.length, 1e-9)
        half = bone.radius * 1.0 * size_k
        bump = Bone(
            "bump",
            tuple(centre - half * direction),
            tuple(centre + half * direction),
            bone.radius * 0.38 * size_k,
            cortex=1.0,
            density=0.8,
            long=False,
        )
        paths = bone_paths(shape, bump, matrix, shift, scale)
        if paths is not None:
            cortex[paths[0]] += paths[1] * min(1.5, strength)
            amask[paths[0]] |= paths[3] > 0.5
    if k in ("fracture_gap", "displaced_fragment") and spec.params["swelling"]:
        return _swelling(skeleton, bone.point(spec.t), strength)
    return []


def _metal(cov: tuple[Window, np.ndarray] | None, strength: float, metal: np.ndarray, amask: np.ndarray) -> None:
    if cov is not None:
        np.maximum(metal[cov[0]], cov[1] * min(1.5, strength), out=metal[cov[0]])
        amask[cov[0]] |= cov[1] > 0.5


def _screw(
    shape: tuple[int, int],
    centre: np.ndarray,
    direction: np.ndarray,
    r_px: float,
    size_k: float,
    strength: float,
    side: float,
    metal: np.ndarray,
    amask: np.ndarray,
) -> None:
    """A screw across a bone: a shaft through it and a wider head on the ``side`` cortex."""
    _metal(
        box(shape, centre, direction, 1.5 * r_px, max(0.8, 0.25 * r_px, 0.004 * max(shape)) * size_k),
        strength,
        metal,
        amask,
    )
    head = centre + direction * side * 1.5 * r_px
    _metal(box(shape, head, direction, max(0.8, 0.15 * r_px), max(1.0, 0.4 * r_px * size_k)), strength, metal, amask)


def _displaced(
    spec: AnomalySpec,
    bone: Bone,
    shape: tuple[int, int],
    matrix: np.ndarray,
    shift: np.ndarray,
    scale: float,
    strength: float,
    cortex: np.ndarray,
    medulla: np.ndarray,
    amask: np.ndarray,
) -> None:
    """Break ``bone`` at ``t``: the distal fragment is shifted sideways and angled about the break."""
    p0, p1 = np.asarray(bone.p0), np.asarray(bone.p1)
    gap = min(0.04, 0.6 * bone.radius / max(bone.length, 1e-9))
    brk = bone.point(spec.t)
    angle = spec.angle / 2.0 * math.sqrt(strength)  # up to ±15° of angulation
    offset = _perp(p1 - p0) * spec.side * bone.radius * (1.0 + 0.6 * spec.params["u2"]) * math.sqrt(strength)
    d0 = brk + _rot(bone.point(spec.t + gap) - brk, angle) + offset
    d1 = brk + _rot(p1 - brk, angle) + offset
    pieces = [
        replace(bone, p1=tuple(bone.point(spec.t - gap)), t1=spec.t - gap),
        replace(bone, p0=tuple(d0), p1=tuple(d1), t0=spec.t + gap),
    ]
    new_outer = np.zeros(shape, np.float32)
    for piece in pieces:
        paths = bone_paths(shape, piece, matrix, shift, scale)
        if paths is not None:
            cortex[paths[0]] += paths[1]
            medulla[paths[0]] += paths[2]
            new_outer[paths[0]] += paths[3]
    intact = bone_paths(shape, bone, matrix, shift, scale)
    if intact is not None:
        new_outer[intact[0]] -= intact[3]
    amask |= np.abs(new_outer) > max(1.0, 0.25 * bone.radius * scale)


def _swelling(skeleton: Skeleton, point: np.ndarray, strength: float) -> list[Soft]:
    """Soft-tissue swelling around a fracture: a slightly fatter copy of the enclosing soft capsule."""
    best, best_depth = None, 0.0
    for s in skeleton.soft:
        a, b = np.asarray(s.p0), np.asarray(s.p1)
        d = b - a
        t = float(np.clip((point - a) @ d / max(float(d @ d), 1e-12), 0, 1))
        depth = s.radius - float(np.linalg.norm(point - (a + t * d)))
        if depth > best_depth:
            best, best_depth, q, direction = s, depth, a + t * d, d / max(float(np.linalg.norm(d)), 1e-9)
    if best is None:
        return []
    half = 0.9 * best.radius
    return [
        Soft(tuple(q - half * direction), tuple(q + half * direction), best.radius * (1 + 0.22 * math.sqrt(strength)))
    ]
