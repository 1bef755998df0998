"""Procedural upper-limb anatomy for the phantom radiographs of :mod:`xrad.data.phantoms.generate`.

A skeleton is a list of :class:`Bone` capsules (a segment with a radius profile that flares at the
ends, a cortical shell and a medulla) and of :class:`Soft` capsules (soft tissue). Coordinates are in
*carrier units*: the carrier's long side is 1, the origin is the carrier centre, x points right and y
points down, and the limb is drawn portrait (long bones roughly along y). :mod:`xrad.data.phantoms.render`
maps these units to pixels.

Anatomical variation comes from two levels of randomness, both explicit:

- :func:`sample_patient` draws one patient's body part (bone widths, lengths, finger spread, laterality,
  which finger a FINGER study shows) — shared by every study and view of that (patient, body part);
- :func:`build_skeleton` turns it into bones for one *view* (PA, lateral, oblique): pose rotation,
  compression of the lateral axis (bones overlap in lateral views), elbow flexion.

Bone *identity* (the index in ``Skeleton.bones``) is the same in every view of a patient's body part,
so an anomaly planted on bone ``i`` at position ``t`` appears at the corresponding place in each view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

PARTS: tuple[str, ...] = ("ELBOW", "FINGER", "FOREARM", "HAND", "HUMERUS", "SHOULDER", "WRIST")
VIEW_KINDS: tuple[str, ...] = ("pa", "lateral", "oblique", "pa")  # view k of a study uses VIEW_KINDS[k-1]

Point = tuple[float, float]


@dataclass(frozen=True)
class Bone:
    """A bone capsule from ``p0`` to ``p1`` (carrier units).

    ``radius`` is the shaft radius; the radius grows by ``flare0``/``flare1`` (relative) towards the
    ends (metaphyses, condyles). ``cortex`` is the cortical shell's share of the radius. ``density``
    scales its attenuation (thin flat bones such as the scapula are < 1). ``long`` marks bones that can
    carry plates, screws and fractures. ``t0``/``t1`` map the capsule onto its parent bone's radius
    profile when the bone is a fragment of a fractured one.
    """

    name: str
    p0: Point
    p1: Point
    radius: float
    cortex: float = 0.35
    flare0: float = 0.0
    flare1: float = 0.0
    density: float = 1.0
    long: bool = True
    t0: float = 0.0
    t1: float = 1.0

    def point(self, t: float) -> np.ndarray:
        """Point at fraction ``t`` along the axis."""
        point: np.ndarray = np.asarray(self.p0) + t * (np.asarray(self.p1) - np.asarray(self.p0))
        return point

    @property
    def length(self) -> float:
        """Axis length in carrier units."""
        return float(math.dist(self.p0, self.p1))


@dataclass(frozen=True)
class Soft:
    """A soft-tissue capsule (the body silhouette is the union of these)."""

    p0: Point
    p1: Point
    radius: float


@dataclass
class Skeleton:
    """Bones and soft tissue of one view, plus ``phys``: carrier units → attenuation path scale.

    ``phys`` keeps zoomed views (WRIST, FINGER) from looking denser than a HAND view of the same bones.
    """

    part: str
    bones: list[Bone] = field(default_factory=list)
    soft: list[Soft] = field(default_factory=list)
    phys: float = 1.0


def _unit(angle_deg: float) -> np.ndarray:
    """Direction ``angle_deg`` clockwise from straight up (0 = up, 90 = right, 180 = down)."""
    a = math.radians(angle_deg)
    return np.array([math.sin(a), -math.cos(a)])


def _chain(
    start: Point, angle: float, lengths: list[float], radii: list[float], gap: float, bends: list[float], name: str
) -> list[Bone]:
    """Bones end to end along a direction, separated by joint gaps, each joint bending by ``bends[i]``."""
    bones, p = [], np.asarray(start, dtype=float)
    for i, (length, radius) in enumerate(zip(lengths, radii)):
        angle += bends[i] if i < len(bends) else 0.0
        q = p + length * _unit(angle)
        bones.append(
            Bone(f"{name}{i + 1}", tuple(p), tuple(q), radius, flare0=0.35, flare1=0.3, long=length > 2.5 * radius)
        )
        p = q + gap * _unit(angle)
    return bones


def sample_patient(part: str, rng: np.random.Generator) -> dict[str, Any]:
    """Draw the anatomical parameters of one patient's body part (shared by all its studies and views)."""
    # Scalars, plus "jitter": a list of 24 floats.
    p: dict[str, Any] = {
        "radius_scale": float(np.clip(rng.normal(1.0, 0.09), 0.8, 1.25)),
        "length_scale": float(rng.uniform(0.9, 1.1)),
        "soft_scale": float(rng.uniform(0.85, 1.2)),
        "spread": float(rng.uniform(0.6, 1.4)),
        "left": float(rng.random() < 0.5),
        "finger": float(rng.integers(0, 5)),  # FINGER: 0 little .. 3 index, 4 thumb
        "flexion": float(rng.uniform(55.0, 95.0)),  # ELBOW lateral flexion
        "tilt": float(rng.normal(0.0, 4.0)),
        "cortex": float(rng.uniform(0.28, 0.42)),
    }
    p["jitter"] = [float(x) for x in rng.normal(0.0, 1.0, size=24)]
    return p


def _hand(p: dict[str, Any]) -> Skeleton:
    """Full hand, PA: distal forearm, 8 carpals, 5 metacarpals, 14 phalanges."""
    rs, ls, ss, j = p["radius_scale"], p["length_scale"], p["soft_scale"], p["jitter"]
    bones = [
        Bone("radius", (0.065, 0.85), (0.055, 0.30), 0.032 * rs, flare1=0.55),
        Bone("ulna", (-0.075, 0.85), (-0.065, 0.31), 0.024 * rs, flare1=0.3),
    ]
    for row, y in enumerate((0.255, 0.195)):
        for k, x in enumerate((-0.062, -0.021, 0.02, 0.061)):
            r = (0.021 + 0.003 * ((k + row) % 2)) * rs
            bones.append(
                Bone(f"carpal{row * 4 + k + 1}", (x - 0.006, y), (x + 0.006, y + 0.004), r, cortex=0.45, long=False)
            )
    soft = [Soft((0.0, 0.9), (0.0, 0.28), 0.125 * ss), Soft((0.0, 0.25), (-0.005, 0.07), 0.118 * ss)]
    fingers = ((-0.075, -14.0, 0.82), (-0.03, -5.0, 0.93), (0.012, 2.0, 1.0), (0.052, 10.0, 0.95))
    for i, (x, fan, scale) in enumerate(fingers):
        angle = fan * p["spread"] + 2.0 * j[i]
        lengths = [fraction * ls * scale for fraction in (0.185, 0.108, 0.068, 0.048)]
        radii = [r * rs for r in (0.0175, 0.0155, 0.013, 0.011)]
        bends = [0.0] + [1.5 * j[4 + 3 * i + k] for k in range(3)]
        bones += _chain((x, 0.165), angle, lengths, radii, 0.011 * ls, bends, f"f{i + 1}_")
    thumb = 35.0 + 5.0 * j[16] + 8.0 * (p["spread"] - 1.0)
    bones += _chain(
        (0.078, 0.19),
        thumb,
        [0.115 * ls, 0.082 * ls, 0.06 * ls],
        [0.019 * rs, 0.017 * rs, 0.014 * rs],
        0.011 * ls,
        [0.0, 4.0 * j[17], 4.0 * j[18]],
        "f5_",
    )
    for b in bones[10:]:
        soft.append(Soft(b.p0, b.p1, b.radius * 1.25 + 0.011 * ss))
    soft.append(Soft((0.05, 0.2), tuple(bones[-3].point(0.8)), 0.035 * ss))
    return Skeleton("HAND", bones, soft)


def _zoom(sk: Skeleton, centre: Point, zoom: float, rotate_deg: float = 0.0) -> Skeleton:
    """Zoom a skeleton about ``centre`` (and rotate about it), for WRIST and FINGER fields of view."""
    c, a = np.asarray(centre), math.radians(rotate_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])

    def f(q: Point) -> Point:
        x, y = zoom * (rot @ (np.asarray(q) - c))
        return float(x), float(y)

    bones = [replace(b, p0=f(b.p0), p1=f(b.p1), radius=b.radius * zoom) for b in sk.bones]
    soft = [Soft(f(s.p0), f(s.p1), s.radius * zoom) for s in sk.soft]
    return Skeleton(sk.part, bones, soft, phys=sk.phys / zoom**0.5)


def _elbow(p: dict[str, Any], flexion: float) -> Skeleton:
    """Distal humerus with condyles, radial head and ulna with olecranon; forearm flexed by ``flexion``."""
    rs, ss, j = p["radius_scale"], p["soft_scale"], p["jitter"]
    bones = [
        Bone("humerus", (0.0, -0.85), (0.0, -0.05), 0.045 * rs, flare1=0.9),
        Bone("condyles", (-0.065, -0.02), (0.065, -0.025), 0.036 * rs, cortex=0.45, long=False),
    ]
    joint, a = np.array([0.0, 0.03]), math.radians(-flexion)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])

    def f(q: Point) -> Point:
        x, y = joint + rot @ (np.asarray(q) - joint)
        return float(x), float(y)

    fore = [
        Bone("radius", (0.048, 0.06), (0.06 + 0.005 * j[0], 0.9), 0.029 * rs, flare0=0.45),
        Bone("ulna", (-0.03, 0.03), (-0.045, 0.9), 0.032 * rs, flare0=0.55),
        Bone("olecranon", (-0.035, -0.01), (-0.06, -0.09), 0.028 * rs, cortex=0.45, long=False),
    ]
    bones += [replace(b, p0=f(b.p0), p1=f(b.p1)) for b in fore]
    soft = [
        Soft((0.0, -0.95), (0.0, 0.0), 0.17 * ss),
        Soft(f((0.0, 0.0)), f((0.0, 1.0)), 0.15 * ss),
        Soft((-0.02, -0.02), f((-0.05, -0.08)), 0.09 * ss),
    ]
    return Skeleton("ELBOW", bones, soft)


def _forearm(p: dict[str, Any]) -> Skeleton:
    """Radius and ulna over the whole carrier, elbow above and carpals below, partly cut by the edges."""
    rs, ls, ss = p["radius_scale"], p["length_scale"], p["soft_scale"]
    bones = [
        Bone("radius", (0.045, -0.47 * ls), (0.07, 0.47 * ls), 0.027 * rs, flare0=0.35, flare1=0.7),
        Bone("ulna", (-0.04, -0.5 * ls), (-0.05, 0.46 * ls), 0.025 * rs, flare0=0.6, flare1=0.25),
        Bone("humerus", (0.0, -0.9), (0.0, -0.56), 0.04 * rs, flare1=0.9, long=False),
    ]
    for k, x in enumerate((-0.05, -0.015, 0.02, 0.055)):
        bones.append(Bone(f"carpal{k + 1}", (x, 0.56), (x + 0.01, 0.565), 0.019 * rs, cortex=0.45, long=False))
    soft = [Soft((0.0, -0.8), (0.0, 0.0), 0.16 * ss), Soft((0.0, 0.0), (0.01, 0.8), 0.13 * ss)]
    return Skeleton("FOREARM", bones, soft)


def _humerus(p: dict[str, Any]) -> Skeleton:
    """Whole humerus: head and glenoid above, condyles below."""
    rs, ls, ss = p["radius_scale"], p["length_scale"], p["soft_scale"]
    bones = [
        Bone("humerus", (0.0, -0.36 * ls), (0.01, 0.38 * ls), 0.04 * rs, flare0=0.6, flare1=0.8),
        Bone("head", (0.02, -0.42), (0.035, -0.41), 0.085 * rs, cortex=0.25, long=False),
        Bone("condyles", (-0.06, 0.43), (0.065, 0.425), 0.035 * rs, cortex=0.45, long=False),
        Bone("glenoid", (-0.14, -0.56), (-0.11, -0.4), 0.05 * rs, density=0.6, long=False),
    ]
    soft = [Soft((0.0, -0.65), (0.0, 0.65), 0.19 * ss)]
    return Skeleton("HUMERUS", bones, soft)


def _shoulder(p: dict[str, Any]) -> Skeleton:
    """Humeral head and neck, glenoid, scapula body, acromion, clavicle and a few faint ribs."""
    rs, ss, j = p["radius_scale"], p["soft_scale"], p["jitter"]
    bones = [
        Bone("humerus", (0.07, -0.02), (0.09, 0.7), 0.055 * rs, flare0=0.5),
        Bone("head", (0.04, -0.06), (0.05, -0.05), 0.11 * rs, cortex=0.22, long=False),
        Bone("glenoid", (-0.09, -0.13), (-0.09, 0.03), 0.03 * rs, cortex=0.5, long=False),
        Bone("scapula", (-0.14, -0.08), (-0.3, 0.38), 0.085 * rs, cortex=0.2, density=0.45, long=False),
        Bone("acromion", (-0.06, -0.2), (0.11, -0.23), 0.026 * rs, cortex=0.45, long=False),
        Bone("clavicle", (-0.5, -0.32 + 0.02 * j[0]), (0.06, -0.27), 0.03 * rs, flare1=0.3),
    ]
    for k in range(3):
        y = 0.05 + 0.17 * k
        bones.append(Bone(f"rib{k + 1}", (-0.55, y + 0.08), (-0.2, y), 0.016 * rs, cortex=0.5, density=0.5, long=False))
    soft = [Soft((-0.5, 0.05), (0.25, 0.02), 0.46 * ss), Soft((0.08, 0.0), (0.1, 0.8), 0.16 * ss)]
    return Skeleton("SHOULDER", bones, soft, phys=0.5)


def build_skeleton(part: str, patient: dict[str, Any], view: str) -> Skeleton:
    """Bones and soft tissue of ``part`` for one view (``pa``, ``lateral`` or ``oblique``).

    Lateral views squeeze the lateral axis so bones overlap (and flex the elbow); oblique views squeeze
    it less. Laterality mirrors x. The bone list's order (identity) never depends on the view.
    """
    if part in ("HAND", "WRIST", "FINGER"):
        sk = _hand(patient)
        if part == "HAND":  # the hand fills most of the carrier, fingertips near its top edge
            sk = _zoom(sk, (0.0, -0.03), 1.25)
        elif part == "WRIST":
            sk = _zoom(sk, (0.0, 0.2), 1.9)
        elif part == "FINGER":
            finger = int(patient["finger"])
            base = 10 + 4 * finger  # first bone of that finger's chain (metacarpal) after 2 + 8 bones
            mc, pp = sk.bones[base], sk.bones[base + 1]
            direction = np.asarray(pp.p1) - np.asarray(mc.p0)
            angle = math.degrees(math.atan2(direction[0], -direction[1]))
            sk = _zoom(sk, tuple(pp.point(0.2)), 2.4, rotate_deg=-angle)
    elif part == "ELBOW":
        sk = _elbow(patient, patient["flexion"] if view == "lateral" else 4.0 * patient["jitter"][1])
    elif part == "FOREARM":
        sk = _forearm(patient)
    elif part == "HUMERUS":
        sk = _humerus(patient)
    elif part == "SHOULDER":
        sk = _shoulder(patient)
    else:
        raise ValueError(f"unknown body part {part!r}; expected one of {PARTS}")
    squeeze = {"pa": 1.0, "lateral": 0.5, "oblique": 0.75}[view]
    mirror = -1.0 if patient["left"] else 1.0

    def f(q: Point) -> Point:
        return (float(q[0]) * squeeze * mirror, float(q[1]))

    sk.bones = [replace(b, p0=f(b.p0), p1=f(b.p1)) for b in sk.bones]
    sk.soft = [Soft(f(s.p0), f(s.p1), s.radius * (0.8 + 0.2 * squeeze)) for s in sk.soft]
    return sk
