"""Footprint-filtered procedural textures and the room's materials, for `hf_distill.data.synthetic`.

`fp` is the world-space size of a pixel at the hit point: patterns finer than it fade to their mean instead of
aliasing. `room_materials` draws floor, walls and ceiling from the scene's generator (the order of draws is part of
the scene's definition).
"""

from __future__ import annotations

import numpy as np

# ----------------------------------------------------------------------------------------------
# Procedural, footprint-filtered textures. `fp` is the world-space size of a pixel at the hit point.
# ----------------------------------------------------------------------------------------------


def _contrast(fp: np.ndarray, period: float) -> np.ndarray:
    """Weight of a pattern of the given period: 1 when well resolved, 0 once a pixel covers half a period."""
    return np.clip(2.0 - 4.0 * fp / period, 0.0, 1.0)


def line_coverage(u: np.ndarray, period: float, width: float, fp: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of lines of `width` repeating every `period` (centred on multiples)."""
    d = np.abs(u - period * np.round(u / period))
    cov = np.clip((0.5 * width - d) / np.maximum(fp, 1e-6) + 0.5, 0.0, 1.0)
    w = _contrast(fp, period)
    return w * cov + (1.0 - w) * (width / period)


def checker_texture(u: np.ndarray, v: np.ndarray, period: float, fp: np.ndarray) -> np.ndarray:
    """Checkerboard of squares of side period/2 in {0, 1}, fading to 0.5 with distance."""
    c = ((np.floor(u * (2.0 / period)) + np.floor(v * (2.0 / period))) % 2).astype(np.float32)
    w = _contrast(fp, period)
    return w * c + (1.0 - w) * 0.5


def _value_noise(u: np.ndarray, v: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """Smooth 2-D value noise in [0, 1] on the integer lattice (perm: 512 entries of a 0..255 permutation)."""
    fu = np.floor(u)
    fv = np.floor(v)
    tu = u - fu
    tv = v - fv
    iu = fu.astype(np.int64) & 255
    iv = fv.astype(np.int64) & 255
    iu1 = (iu + 1) & 255
    iv1 = (iv + 1) & 255
    tu = tu * tu * (3.0 - 2.0 * tu)
    tv = tv * tv * (3.0 - 2.0 * tv)
    values = perm.astype(np.float32)
    a = values[perm[iu] + iv]
    b = values[perm[iu1] + iv]
    c = values[perm[iu] + iv1]
    d = values[perm[iu1] + iv1]
    top = a + (b - a) * tu
    bottom = c + (d - c) * tu
    return (top + (bottom - top) * tv) * (1.0 / 255.0)


def fbm_noise(u: np.ndarray, v: np.ndarray, fp: np.ndarray, perm: np.ndarray, freq: float, octaves: int = 4) -> np.ndarray:
    """Fractal noise in [0, 1] whose octaves finer than the pixel footprint are replaced by their mean."""
    total = np.zeros_like(u)
    norm = 0.0
    amp = 1.0
    for k in range(octaves):
        f = freq * 2.0**k
        w = _contrast(fp, 1.0 / f)
        n = _value_noise(u * f + 17.0 * k, v * f - 31.0 * k, perm)
        total += amp * (w * n + (1.0 - w) * 0.5)
        norm += amp
        amp *= 0.5
    return total / norm


def mix_colors(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Blend colours, each (3,) or (3, N), by weights t (N,); returns (3, N)."""
    a = a if a.ndim == 2 else a[:, None]
    b = b if b.ndim == 2 else b[:, None]
    return a + (b - a) * t


def random_albedo(rng: np.random.Generator, lo: float = 0.05, hi: float = 0.8) -> np.ndarray:
    """A random linear-space albedo with moderate saturation."""
    base = rng.uniform(lo, hi)
    tint = rng.uniform(-0.5, 0.5, size=3) * rng.uniform(0.1, 0.9)
    return np.clip(base * (1.0 + tint), 0.01, 0.95).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Room materials
# ----------------------------------------------------------------------------------------------


def floor_albedo(kind: int, params: dict, x, z, fp, perm) -> np.ndarray:
    """(3, N) linear albedo of floor points at (x, z) in metres for the floor kind and params of ``room_materials``
    (fp: pixel footprints, perm: the noise permutation)."""
    c1, c2 = params["c1"], params["c2"]
    if kind == 0:  # wooden planks along z with staggered joints and grain
        pw = params["period"]
        plank = np.floor(x / pw)
        stagger = (plank * 0.618) % 1.0 * 1.5
        seg = np.floor((z + stagger) / 1.5)
        hue = 0.5 + (_value_noise(plank * 7.3 + 0.5, seg * 3.1 + 0.5, perm) - 0.5) * _contrast(fp, 2 * pw)
        grain = fbm_noise(x * 2.0, z * 0.15, fp * 2.0, perm, 8.0, 3)
        col = mix_colors(c1, c2, np.clip(0.6 * hue + 0.4 * grain, 0, 1))
        gaps = np.maximum(line_coverage(x, pw, 0.006, fp), line_coverage(z + stagger, 1.5, 0.006, fp))
        return col * (1.0 - 0.6 * gaps)
    if kind == 1:  # tiles: checker with grout
        per = params["period"]
        col = mix_colors(c1, c2, checker_texture(x, z, 2 * per, fp))
        grout = np.maximum(line_coverage(x, per, 0.01, fp), line_coverage(z, per, 0.01, fp))
        return mix_colors(col, params["grout"], grout)
    n = fbm_noise(x, z, fp, perm, 6.0, 4)  # carpet
    return mix_colors(c1, c2, n)


def wall_albedo(kind: int, params: dict, s, y, fp, perm) -> np.ndarray:
    """(3, N) linear albedo of wall points at (s along the wall, y up) in metres for the wall kind and params of
    ``room_materials`` (fp: pixel footprints, perm: the noise permutation)."""
    c1, c2 = params["c1"], params["c2"]
    if kind == 0:  # paint with a faint roller texture
        col = mix_colors(c1, c2, 0.2 * fbm_noise(s, y, fp, perm, 3.0, 4))
    elif kind == 1:  # striped wallpaper
        stripes = line_coverage(s, params["period"], params["period"] * 0.5, fp)
        col = mix_colors(c1, c2, stripes * (0.8 + 0.2 * fbm_noise(s, y, fp, perm, 10.0, 2)))
    else:  # bricks
        row = np.floor(y / 0.075)
        sh = s + (row % 2) * 0.1
        brick = _value_noise(np.floor(sh / 0.2) * 3.7, row * 5.3, perm)
        col = mix_colors(c1, c2, brick)
        mortar = np.maximum(line_coverage(y, 0.075, 0.01, fp), line_coverage(sh, 0.2, 0.01, fp))
        col = mix_colors(col, params["grout"], mortar)
    base = y < params["baseboard"]
    col[:, base] = params["base_color"][:, None]
    for r in params["frames"]:  # pictures, doors, windows: rectangles in wall coordinates
        inside = (s > r["s0"]) & (s < r["s1"]) & (y > r["y0"]) & (y < r["y1"])
        if not inside.any():
            continue
        ss, yy, ff = s[inside], y[inside], fp[inside]
        art = fbm_noise(ss - r["s0"], yy, ff, perm, r["freq"], 4)
        inner = mix_colors(r["c1"], r["c2"], np.clip((art - 0.3) * 2.5, 0, 1))
        border = np.minimum.reduce([ss - r["s0"], r["s1"] - ss, yy - r["y0"], r["y1"] - yy]) < r["border"]
        inner[:, border] = r["frame"][:, None]
        col[:, inside] = inner
    return col


def room_materials(rng: np.random.Generator, room: np.ndarray) -> dict:
    """The random materials of a room of size ``room``: floor, walls and ceiling, each a kind and its parameters."""
    warm = np.array([1.0, 0.85, 0.7], np.float32)
    floor = {
        "kind": int(rng.integers(3)),
        "c1": random_albedo(rng, 0.1, 0.5) * warm,
        "c2": random_albedo(rng, 0.1, 0.6),
        "grout": random_albedo(rng, 0.3, 0.8),
        "period": float(rng.uniform(0.1, 0.5)),
    }
    walls = []
    wall_kind = int(rng.choice(3, p=[0.5, 0.3, 0.2]))
    wall_c1 = random_albedo(rng, 0.4, 0.9)
    for wall in range(4):
        length = float(room[0] if wall in (0, 1) else room[2])
        frames = []
        for _ in range(int(rng.integers(0, 4))):
            fw, fh = rng.uniform(0.3, 1.4), rng.uniform(0.3, 1.2)
            s0 = rng.uniform(0.0, max(0.01, length - fw))
            y0 = rng.uniform(0.8, max(0.81, room[1] - fh - 0.2))
            frames.append(_frame(rng, s0, s0 + fw, y0, y0 + fh))
        if rng.random() < 0.3:  # a door
            s0 = rng.uniform(0.0, max(0.01, length - 0.9))
            door = _frame(rng, s0, s0 + 0.9, 0.0, 2.05)
            door["freq"] = 0.5
            frames.append(door)
        accent = rng.random() < 0.25
        walls.append({
            "kind": int(rng.integers(3)) if accent else wall_kind,
            "c1": random_albedo(rng, 0.3, 0.9) if accent else wall_c1,
            "c2": random_albedo(rng, 0.2, 0.9),
            "grout": random_albedo(rng, 0.5, 0.9),
            "period": float(rng.uniform(0.05, 0.3)),
            "baseboard": float(rng.uniform(0.0, 0.12)),
            "base_color": random_albedo(rng, 0.05, 0.9),
            "frames": frames,
        })
    ceiling = {"c1": random_albedo(rng, 0.6, 0.9), "panel": float(rng.uniform(0.5, 1.2)), "panels": rng.random() < 0.5}
    return {"floor": floor, "walls": walls, "ceiling": ceiling}


def _frame(rng: np.random.Generator, s0: float, s1: float, y0: float, y1: float) -> dict:
    return {
        "s0": float(s0), "s1": float(s1), "y0": float(y0), "y1": float(y1),
        "c1": random_albedo(rng, 0.05, 0.9), "c2": random_albedo(rng, 0.05, 0.9), "frame": random_albedo(rng, 0.02, 0.5),
        "border": float(rng.uniform(0.02, 0.06)), "freq": float(rng.uniform(1.0, 6.0)),
    }
