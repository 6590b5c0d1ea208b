"""Procedural RGB-D scenes with exact depth.

`render_scene` ray casts a furnished room (floor, walls, ceiling, boxes, tables, spheres) through a
pinhole camera, vectorised over pixels with numpy. Textures are defined in world coordinates, so their
image-space scale shrinks with distance (a perspective cue), and they are band-limited by each pixel's
footprint so distant texture fades to its mean instead of aliasing (textures and room materials: in
`hf_distill.data.materials`). Shading is Lambertian from a ceiling light with a cast shadow, plus a
hemispherical ambient term and corner darkening.

Depth is the camera z-depth in metres (not the ray length), float32 and strictly positive.

The writers that lay rendered scenes out in each dataset's on-disk format are in `hf_distill.testing`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hf_distill.data.materials import (
    checker_texture,
    fbm_noise,
    floor_albedo,
    line_coverage,
    mix_colors,
    random_albedo,
    room_materials,
    wall_albedo,
)

__all__ = ["SyntheticScene", "render_scene"]

_EPS = 1e-4
_CUBE = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float32)  # (8, 3)


@dataclass
class SyntheticScene:
    """One rendered view.

    image: uint8 (H, W, 3) sRGB. depth: float32 (H, W) camera z-depth in metres, all > 0.
    focal: focal length in pixels (fx = fy); the principal point is the image centre.
    """

    image: np.ndarray
    depth: np.ndarray
    focal: float


# ----------------------------------------------------------------------------------------------
# Scene description
# ----------------------------------------------------------------------------------------------


@dataclass
class _Box:
    center: np.ndarray  # (3,)
    half: np.ndarray  # (3,) half extents in the box frame
    angle: float  # rotation about the vertical axis
    color: np.ndarray  # (3,) linear albedo
    color2: np.ndarray
    pattern: str  # "plain" | "stripes" | "checker"
    period: float

    def rotation(self) -> np.ndarray:
        c, s = math.cos(self.angle), math.sin(self.angle)
        return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=np.float32)

    def bounding_radius(self) -> float:
        return float(np.linalg.norm(self.half))

    def corners(self) -> np.ndarray:
        """(8, 3) world-space corners."""
        return (_CUBE * self.half) @ self.rotation().T + self.center


@dataclass
class _Sphere:
    center: np.ndarray
    radius: float
    color: np.ndarray
    color2: np.ndarray
    pattern: str
    period: float

    def bounding_radius(self) -> float:
        return self.radius

    def corners(self) -> np.ndarray:
        """(8, 3) corners of the bounding cube."""
        return _CUBE * self.radius + self.center


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dot product of vectors stored component-major: (3, N) with (3, N), (3, 1) or (3,)."""
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _apply(m: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The 3x3 matrix m applied to component-major vectors v (3, N) or (3,).

    Written out elementwise: a BLAS call on (3, N) would start thread pools that oversubscribe the
    cores of data-loading workers.
    """
    if v.ndim == 1:
        return m @ v
    return np.stack([m[i, 0] * v[0] + m[i, 1] * v[1] + m[i, 2] * v[2] for i in range(3)])


def _relative(o: np.ndarray, center: np.ndarray) -> np.ndarray:
    return o - center if o.ndim == 1 else o - center[:, None]


def _intersect_box(box: _Box, o: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Ray parameter (...) of the first hit, inf when missed, for rays o + t d; o (3,) or like d, d (3, ...)."""
    rot = box.rotation()
    lo = _apply(rot.T, _relative(o, box.center))
    ld = _apply(rot.T, d)
    tmin = np.full(d.shape[1:], -np.inf, np.float32)
    tmax = np.full(d.shape[1:], np.inf, np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        for a in range(3):  # slabs; fmax/fmin skip the NaN of rays parallel to a face plane
            inv = 1.0 / ld[a]
            t1 = (-box.half[a] - lo[a]) * inv
            t2 = (box.half[a] - lo[a]) * inv
            tmin = np.fmax(tmin, np.minimum(t1, t2))
            tmax = np.fmin(tmax, np.maximum(t1, t2))
    return np.where((tmax >= tmin) & (tmin > _EPS), tmin, np.inf).astype(np.float32)


def _intersect_sphere(sph: _Sphere, o: np.ndarray, d: np.ndarray) -> np.ndarray:
    oc = _relative(o, sph.center)
    a = _dot(d, d)
    b = _dot(d, oc)
    c = _dot(oc, oc) - sph.radius**2
    disc = b * b - a * c
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(disc)) / a
    return np.where((disc >= 0) & (t > _EPS), t, np.inf).astype(np.float32)


def _intersect(obj, o: np.ndarray, d: np.ndarray) -> np.ndarray:
    return _intersect_box(obj, o, d) if isinstance(obj, _Box) else _intersect_sphere(obj, o, d)


def _object_normals(obj, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Outward normals (3, N) at surface points p (3, N) and 2-D texture coordinates (u, v) on the surface."""
    if isinstance(obj, _Sphere):
        n = _relative(p, obj.center) / obj.radius
        return n, np.arctan2(n[0], n[2]) * obj.radius, p[1] - obj.center[1]
    rot = obj.rotation()
    lp = _apply(rot.T, _relative(p, obj.center))
    r = np.abs(lp) / obj.half[:, None]
    on_x = (r[0] >= r[1]) & (r[0] >= r[2])
    on_y = ~on_x & (r[1] >= r[2])
    on_z = ~on_x & ~on_y
    nl = np.stack([on_x * np.sign(lp[0]), on_y * np.sign(lp[1]), on_z * np.sign(lp[2])]).astype(np.float32)
    # The two in-face coordinates: drop the normal axis.
    return _apply(rot, nl), np.where(on_x, lp[2], lp[0]), np.where(on_y, lp[2], lp[1])


def _random_object_material(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str, float]:
    c1 = random_albedo(rng)
    c2 = np.clip(c1 * rng.uniform(0.3, 1.7, size=3), 0.01, 0.95).astype(np.float32)
    pattern = str(rng.choice(["plain", "stripes", "checker"], p=[0.4, 0.3, 0.3]))
    return c1, c2, pattern, float(rng.uniform(0.05, 0.4))


def _place(
    rng: np.random.Generator, room: np.ndarray, cam: np.ndarray, radius: float, taken: list
) -> np.ndarray | None:
    """A floor position (x, z) for a footprint of `radius`, clear of the camera and of earlier objects."""
    for _ in range(20):
        x = rng.uniform(radius + 0.05, max(radius + 0.06, room[0] - radius - 0.05))
        z = rng.uniform(radius + 0.05, max(radius + 0.06, room[2] - radius - 0.05))
        if math.hypot(x - cam[0], z - cam[2]) < radius + 0.6:
            continue
        if all(math.hypot(x - tx, z - tz) > radius + tr for tx, tz, tr in taken):
            taken.append((x, z, radius))
            return np.array([x, z], dtype=np.float32)
    return None


def _build_objects(rng: np.random.Generator, room: np.ndarray, cam: np.ndarray) -> list:
    objects: list = []
    taken: list = []
    for _ in range(int(rng.integers(2, 6))):  # boxes: crates, cabinets, beds
        half = np.array([rng.uniform(0.15, 0.8), rng.uniform(0.15, 0.9), rng.uniform(0.15, 0.7)], dtype=np.float32)
        xz = _place(rng, room, cam, float(np.hypot(half[0], half[2])), taken)
        if xz is None:
            continue
        c1, c2, pat, per = _random_object_material(rng)
        center = np.array([xz[0], half[1], xz[1]], dtype=np.float32)
        objects.append(_Box(center, half, float(rng.uniform(-0.8, 0.8)), c1, c2, pat, per))
    if rng.random() < 0.6:  # a table: top and four legs
        hw, hd, height = rng.uniform(0.35, 0.8), rng.uniform(0.3, 0.5), rng.uniform(0.65, 0.8)
        xz = _place(rng, room, cam, float(np.hypot(hw, hd)), taken)
        if xz is not None:
            angle = float(rng.uniform(-0.8, 0.8))
            c1, c2, pat, per = _random_object_material(rng)
            top = _Box(np.array([xz[0], height - 0.02, xz[1]], np.float32), np.array([hw, 0.02, hd], np.float32),
                       angle, c1, c2, pat, per)
            objects.append(top)
            rot = top.rotation()
            for sx in (-1, 1):
                for sz in (-1, 1):
                    off = rot @ np.array([sx * (hw - 0.05), 0.0, sz * (hd - 0.05)], np.float32)
                    center = np.array([xz[0] + off[0], (height - 0.04) / 2, xz[1] + off[2]], np.float32)
                    objects.append(_Box(center, np.array([0.025, (height - 0.04) / 2, 0.025], np.float32),
                                        angle, c1 * 0.6, c1 * 0.6, "plain", 1.0))
    for _ in range(int(rng.integers(1, 4))):  # balls on the floor or on a box
        r = float(rng.uniform(0.1, 0.5))
        c1, c2, pat, per = _random_object_material(rng)
        boxes = [o for o in objects if isinstance(o, _Box) and o.half[0] > r and o.half[2] > r and o.half[1] > 0.1]
        if boxes and rng.random() < 0.4:
            b = boxes[int(rng.integers(len(boxes)))]
            center = np.array([b.center[0], b.center[1] + b.half[1] + r, b.center[2]], np.float32)
        else:
            xz = _place(rng, room, cam, r, taken)
            if xz is None:
                continue
            center = np.array([xz[0], r, xz[1]], np.float32)
        objects.append(_Sphere(center, r, c1, c2, pat, per))
    return objects


def _screen_rect(points: np.ndarray, cam_o: np.ndarray, rot: np.ndarray, f: float, h: int, w: int):
    """Pixel rectangle (r0, r1, c0, c1) bounding the projections of world points (8, 3): the whole frame
    when a point lies behind the camera, None when the projection misses the frame."""
    pc = (points - cam_o) @ rot  # (8, 3) in the camera frame: x right, y up, z forward
    if np.any(pc[:, 2] < 0.05):
        return 0, h, 0, w
    xs = pc[:, 0] / pc[:, 2] * f + w / 2.0
    ys = -pc[:, 1] / pc[:, 2] * f + h / 2.0
    c0, c1 = int(max(0, math.floor(xs.min()) - 1)), int(min(w, math.ceil(xs.max()) + 1))
    r0, r1 = int(max(0, math.floor(ys.min()) - 1)), int(min(h, math.ceil(ys.max()) + 1))
    if c0 >= c1 or r0 >= r1:
        return None
    return r0, r1, c0, c1


# ----------------------------------------------------------------------------------------------
# Rendering: sample the scene, cast the rays, describe the hit surfaces, light them, develop the image
# ----------------------------------------------------------------------------------------------


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Camera-to-world rotation: columns are the camera right, up and forward axes in world coordinates."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return (ry @ rx @ rz).astype(np.float32)


@dataclass
class _Layout:
    """Everything random about a scene but the sensor noise."""

    perm: np.ndarray  # (512,) the noise permutation, stored twice
    room: np.ndarray  # (3,) width, height, depth in metres: the room spans [0, room] on each axis
    cam_o: np.ndarray  # (3,) camera centre
    rot: np.ndarray  # (3, 3) camera-to-world rotation
    focal: float  # pixels
    objects: list  # _Box and _Sphere
    mats: dict  # room materials: floor, walls, ceiling
    light: np.ndarray  # (3,) point light position
    light_power: float
    ambient: float
    light_color: np.ndarray  # (3,)


@dataclass
class _Hits:
    """The first surface on the ray of each of the N = H * W pixels (row-major)."""

    cam_dirs: np.ndarray  # (3, N) camera-frame ray directions with unit z component
    d: np.ndarray  # (3, N) the same in world coordinates
    t: np.ndarray  # (N,) ray parameter of the hit, which is the camera z-depth
    sid: np.ndarray  # (N,) surface: 0 floor, 1 ceiling, 2 wall z=0, 3 wall z=Z, 4 wall x=0, 5 wall x=X, 6+ objects
    p: np.ndarray  # (3, N) world position of the hit


@dataclass
class _Surfaces:
    """What the light meets at each hit."""

    normal: np.ndarray  # (3, N) unit normals facing the camera side
    albedo: np.ndarray  # (3, N) linear albedo
    ao: np.ndarray  # (N,) ambient occlusion factor in (0, 1]


def _sample_layout(rng: np.random.Generator, height: int, width: int) -> _Layout:
    """Draw room, camera, furniture, materials and light, in this order (the order of draws defines the scene)."""
    perm = rng.permutation(256)
    perm = np.concatenate([perm, perm])
    room = np.array([rng.uniform(3.0, 7.0), rng.uniform(2.4, 3.4), rng.uniform(3.5, 11.0)], np.float32)
    cam_o = np.array([rng.uniform(0.25, 0.75) * room[0], rng.uniform(0.9, min(1.9, room[1] - 0.3)),
                      rng.uniform(0.2, 0.35) * room[2]], np.float32)
    rot = _rotation(rng.uniform(-0.6, 0.6), rng.uniform(-0.35, 0.15), rng.uniform(-0.05, 0.05))
    fov = math.radians(rng.uniform(50.0, 85.0))
    f = 0.5 * max(height, width) / math.tan(0.5 * fov)
    objects = _build_objects(rng, room, cam_o)
    mats = room_materials(rng, room)
    light = np.array([rng.uniform(0.2, 0.8) * room[0], room[1] - 0.15, rng.uniform(0.3, 0.8) * room[2]], np.float32)
    light_power = float(rng.uniform(6.0, 14.0))
    ambient = float(rng.uniform(0.15, 0.35))
    light_color = np.array([1.0, rng.uniform(0.85, 1.0), rng.uniform(0.65, 0.95)], np.float32)
    return _Layout(perm, room, cam_o, rot, f, objects, mats, light, light_power, ambient, light_color)


def _cast_rays(layout: _Layout, height: int, width: int) -> _Hits:
    """Nearest hit of every pixel's ray: the room box, then the objects in front of it."""
    room, cam_o, rot, f = layout.room, layout.cam_o, layout.rot, layout.focal
    # Rays (3, N) with unit camera-z component, so the hit parameter t is exactly the z-depth.
    xs = (np.arange(width, dtype=np.float32) + 0.5 - width / 2.0) / f
    ys = -(np.arange(height, dtype=np.float32) + 0.5 - height / 2.0) / f
    cam_dirs = np.stack([np.broadcast_to(xs[None, :], (height, width)).ravel(),
                         np.broadcast_to(ys[:, None], (height, width)).ravel(),
                         np.ones(height * width, np.float32)])
    d = _apply(rot, cam_dirs)
    n_pix = d.shape[1]

    # Room: the ray leaves the box through the nearest of the three planes it faces.
    t = np.full(n_pix, np.inf, np.float32)
    sid = np.zeros(n_pix, np.int32)
    with np.errstate(divide="ignore"):
        for axis, neg_id in ((1, 0), (2, 2), (0, 4)):
            da = d[axis]
            ahead = da > 0
            ta = np.where(ahead, room[axis] - cam_o[axis], cam_o[axis]) / np.abs(da)  # inf when parallel
            closer = ta < t
            t = np.minimum(t, ta)
            sid = np.where(closer, neg_id + ahead, sid)
    # Objects in front of the room, ray cast within their projected bounding rectangles only.
    d_img, t_img, sid_img = d.reshape(3, height, width), t.reshape(height, width), sid.reshape(height, width)
    for k, obj in enumerate(layout.objects):
        rect = _screen_rect(obj.corners(), cam_o, rot, f, height, width)
        if rect is None:
            continue
        r0, r1, c0, c1 = rect
        tk = _intersect(obj, cam_o, d_img[:, r0:r1, c0:c1])
        t_rect = t_img[r0:r1, c0:c1]
        closer = tk < t_rect
        t_rect[closer] = tk[closer]
        sid_img[r0:r1, c0:c1][closer] = 6 + k
    return _Hits(cam_dirs, d, t, sid, cam_o[:, None] + d * t)


def _surfaces(layout: _Layout, hits: _Hits) -> _Surfaces:
    """Normals, footprint-filtered albedo and ambient occlusion of every hit, surface by surface."""
    room, mats, perm, f = layout.room, layout.mats, layout.perm, layout.focal
    d, t, sid, p = hits.d, hits.t, hits.sid, hits.p
    n_pix = d.shape[1]
    ray_len = np.sqrt(_dot(d, d))
    view = d / ray_len
    normal = np.zeros_like(p)
    albedo = np.zeros_like(p)
    ao = np.ones(n_pix, np.float32)

    def footprint(sel: np.ndarray, n: np.ndarray) -> np.ndarray:
        """World-space size of one pixel at the hit points of `sel` on surfaces with normals n (3, M)."""
        cos = np.abs(_dot(n, view[:, sel]))
        return (t[sel] * ray_len[sel] / f / np.maximum(cos, 0.15)).astype(np.float32)

    def corner_ao(dists: list[np.ndarray]) -> np.ndarray:
        return 1.0 - 0.35 * np.exp(-np.minimum.reduce(dists) / 0.35)

    # Floor and ceiling.
    for s_id, ny in ((0, 1.0), (1, -1.0)):
        sel = np.flatnonzero(sid == s_id)
        if sel.size == 0:
            continue
        n = np.zeros((3, sel.size), np.float32)
        n[1] = ny
        normal[:, sel] = n
        fp = footprint(sel, n)
        x, z = p[0, sel], p[2, sel]
        if s_id == 0:
            albedo[:, sel] = floor_albedo(mats["floor"]["kind"], mats["floor"], x, z, fp, perm)
        else:
            c = mats["ceiling"]
            col = np.repeat(c["c1"][:, None], sel.size, axis=1)
            if c["panels"]:
                col *= 1.0 - 0.3 * np.maximum(line_coverage(x, c["panel"], 0.02, fp), line_coverage(z, c["panel"], 0.02, fp))
            albedo[:, sel] = col
        ao[sel] = corner_ao([x, room[0] - x, z, room[2] - z])

    # Walls: (s, y) coordinates along each wall.
    for w_id in range(4):
        sel = np.flatnonzero(sid == 2 + w_id)
        if sel.size == 0:
            continue
        axis, inward = (2, 1.0 if w_id == 0 else -1.0) if w_id < 2 else (0, 1.0 if w_id == 2 else -1.0)
        n = np.zeros((3, sel.size), np.float32)
        n[axis] = inward
        normal[:, sel] = n
        fp = footprint(sel, n)
        s = p[0, sel] if axis == 2 else p[2, sel]
        y = p[1, sel]
        length = room[0] if axis == 2 else room[2]
        albedo[:, sel] = wall_albedo(mats["walls"][w_id]["kind"], mats["walls"][w_id], s, y, fp, perm)
        ao[sel] = corner_ao([y, room[1] - y, s, length - s])

    # Objects.
    for k, obj in enumerate(layout.objects):
        sel = np.flatnonzero(sid == 6 + k)
        if sel.size == 0:
            continue
        n, u, v = _object_normals(obj, p[:, sel])
        normal[:, sel] = n
        fp = footprint(sel, n)
        if obj.pattern == "stripes":
            w = line_coverage(u + v * 0.3, obj.period, obj.period * 0.5, fp)
        elif obj.pattern == "checker":
            w = checker_texture(u, v, obj.period, fp)
        else:
            w = 0.3 * fbm_noise(u, v, fp, perm, 4.0, 3)
        albedo[:, sel] = mix_colors(obj.color, obj.color2, w)
        ao[sel] = 1.0 - 0.3 * np.exp(-np.maximum(p[1, sel], 0.0) / 0.15)  # darker near the floor
    return _Surfaces(normal, albedo, ao)


def _shade(layout: _Layout, hits: _Hits, surfaces: _Surfaces) -> np.ndarray:
    """(3, N) linear radiance: Lambertian point light with shadows cast by the objects, plus hemispherical ambient."""
    light, p = layout.light, hits.p
    normal, albedo, ao = surfaces.normal, surfaces.albedo, surfaces.ao
    to_light = light[:, None] - p
    dist2 = _dot(to_light, to_light)
    lam = np.clip(_dot(normal, to_light) / np.sqrt(dist2), 0.0, None)
    shadow = np.ones(p.shape[1], np.float32)
    dist = np.sqrt(dist2)
    for obj in layout.objects:
        # Cheap rejection: only lit points behind the object's bounding sphere, seen from the light, qualify.
        to_obj = obj.center - light
        obj_dist = float(np.linalg.norm(to_obj))
        radius = obj.bounding_radius()
        cos_cone = math.sqrt(max(0.0, 1.0 - (radius / obj_dist) ** 2)) if obj_dist > radius else -1.0
        cos_point = _dot(to_light, to_obj / -obj_dist) / dist
        cand = np.flatnonzero((cos_point >= cos_cone) & (dist > obj_dist - radius) & (lam > 0))
        if cand.size == 0:
            continue
        origins = p[:, cand] + normal[:, cand] * 1e-3
        blocked = _intersect(obj, origins, to_light[:, cand]) < 1.0
        shadow[cand[blocked]] = 0.15
    direct = layout.light_power * lam * shadow / (1.0 + dist2 / 4.0)
    hemi = layout.ambient * (0.75 + 0.25 * normal[1]) * ao
    return albedo * (hemi + direct * layout.light_color[:, None])


def _develop(radiance: np.ndarray, cam_dirs: np.ndarray, focal: float, height: int, width: int,
             rng: np.random.Generator) -> np.ndarray:
    """(3, N) radiance -> uint8 (H, W, 3) sRGB: auto exposure, vignetting, sRGB encoding, a little sensor noise."""
    lum = radiance.mean(axis=0)
    radiance *= 0.85 / max(float(np.percentile(lum[::7], 97)), 1e-6)
    r2 = (cam_dirs[0] ** 2 + cam_dirs[1] ** 2) * (focal / (0.5 * max(height, width))) ** 2
    radiance *= 1.0 - 0.125 * np.minimum(r2, 2.0)
    srgb = np.power(np.clip(radiance, 0.0, 1.0), 1.0 / 2.2)
    noise = (rng.random(size=srgb.shape, dtype=np.float32) - 0.5) * 4.0  # uniform, std 1.15 levels
    return np.clip(srgb * 255.0 + noise + 0.5, 0, 255).astype(np.uint8).T.reshape(height, width, 3)


def render_scene(seed: int, height: int, width: int) -> SyntheticScene:
    """Render a random furnished room, deterministic by `seed`, at any size.

    Returns image uint8 (H, W, 3), depth float32 (H, W) z-depth in metres (> 0), focal in pixels.
    Rooms are 3-7 m wide, 3.5-11 m deep and 2.4-3.4 m high, so depth spans about 0.3-12 m.
    """
    if height < 1 or width < 1:
        raise ValueError(f"render_scene needs a positive size, got {height}x{width}")
    rng = np.random.default_rng([seed, 0x5CE9E])
    layout = _sample_layout(rng, height, width)
    hits = _cast_rays(layout, height, width)
    radiance = _shade(layout, hits, _surfaces(layout, hits))
    image = _develop(radiance, hits.cam_dirs, layout.focal, height, width, rng)
    depth = np.maximum(hits.t, 1e-3).astype(np.float32).reshape(height, width)
    return SyntheticScene(image=image, depth=depth, focal=float(layout.focal))
