"""Oracle teachers: the exact disparity of a view, degraded by flaws chosen in a spec.

Generated scenes carry exact depth, so a teacher whose flaws are known can be built without a network: it is given
the exact depth of each view it sees (``--teacher_models oracle:...``, see ``hf_distill.teachers.OracleTeacher``)
and returns ``1 / depth`` spoilt by the flaws its spec names, each with a strength:

    oracle                                        exact disparity, no flaw
    oracle:resolution=28                          works at a 28 x 28 input, brought back to the view's size
    oracle:affine=0.5                             each view scaled by exp(0.5 u) and shifted by 0.5 v mean(disparity)
    oracle:bias=far:0.8,split=3                   surfaces beyond 3 m flattened by 80% toward the 3 m disparity
    oracle:noise=0.1                              per-pixel multiplicative noise, disparity * (1 + 0.1 e)
    oracle:resolution=28,noise=0.05,seed=1        combined; seed fixes the random draws

(u, v ~ U[-1, 1] per view and e ~ N(0, 1) per pixel, from the teacher's own generator.) Flaws apply in the order
bias (a property of the scene: on exact values), resolution, noise, affine (an ambiguity of the output).

* **resolution** R: the disparity is resized to R x R (bilinear, antialiased) and back (bilinear), as a network with
  a fixed input size does; structure finer than view side / R is lost, so a zoomed-in patch shows finer detail.
* **affine** A: each view gets its own scale and shift: what scale-and-shift normalisation must absorb.
* **bias** REGION:S: REGION ``far`` (depth > split) or ``near`` (depth < split) has its disparity pulled toward the
  split's disparity c: ``c + (1 - S)(d - c)`` (S = 1: a flat plane at the split). ``far`` and ``near`` teachers
  with the same split are wrong on disjoint regions: complementary teachers.
* **noise** s: independent per-pixel noise of relative size s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ORACLE", "BIAS_REGIONS", "OracleSpec", "parse_oracle_spec", "exact_disparity", "biased_region", "degrade"]

ORACLE = "oracle"
BIAS_REGIONS = ("far", "near")


@dataclass(frozen=True)
class OracleSpec:
    """The flaws of an oracle teacher (see the module docstring); every strength 0 / None = no flaw."""

    resolution: int | None = None
    affine: float = 0.0
    bias: str | None = None
    bias_strength: float = 0.0
    split: float = 3.0
    noise: float = 0.0
    seed: int = 0

    def __str__(self) -> str:
        parts = []
        if self.resolution is not None:
            parts.append(f"resolution={self.resolution}")
        if self.affine:
            parts.append(f"affine={self.affine:g}")
        if self.bias is not None:
            parts += [f"bias={self.bias}:{self.bias_strength:g}", f"split={self.split:g}"]
        if self.noise:
            parts.append(f"noise={self.noise:g}")
        if self.seed:
            parts.append(f"seed={self.seed}")
        return ORACLE + (":" + ",".join(parts) if parts else "")


def parse_oracle_spec(name: str) -> OracleSpec:
    """``oracle`` or ``oracle:key=value,...`` -> OracleSpec; ValueError naming the bad part."""
    head, _, body = name.partition(":")
    if head != ORACLE:
        raise ValueError(f"'{name}' is not an oracle teacher spec (it starts with '{ORACLE}')")
    fields: dict = {}
    for item in filter(None, body.split(",")):
        key, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError("expected key=value")
            if key == "resolution":
                fields[key] = int(value)
                if fields[key] < 1:
                    raise ValueError("must be >= 1")
            elif key in ("affine", "noise", "split"):
                fields[key] = float(value)
                if fields[key] < 0 or (key == "split" and fields[key] == 0):
                    raise ValueError("must be positive" if key == "split" else "must be >= 0")
            elif key == "bias":
                region, _, strength = value.partition(":")
                if region not in BIAS_REGIONS:
                    raise ValueError(f"region must be one of {BIAS_REGIONS}")
                fields["bias"], fields["bias_strength"] = region, float(strength or 1.0)
                if not 0.0 <= fields["bias_strength"] <= 1.0:
                    raise ValueError("strength must be in [0, 1]")
            elif key == "seed":
                fields[key] = int(value)
            else:
                raise ValueError("unknown flaw; known: resolution, affine, bias, split, noise, seed")
        except ValueError as error:
            raise ValueError(f"oracle teacher '{name}': '{item}': {error}") from None
    return OracleSpec(**fields)


def exact_disparity(depth: Tensor) -> Tensor:
    """(N, H, W) depth in metres -> disparity 1 / depth, 0 where the depth is not finite and positive."""
    depth = depth.float()
    valid = torch.isfinite(depth) & (depth > 0)
    return torch.where(valid, 1.0 / torch.where(valid, depth, 1.0), 0.0)


def biased_region(depth: Tensor, spec: OracleSpec) -> Tensor:
    """(..., H, W) bool: the pixels the spec's regional bias spoils (all False without a bias)."""
    if spec.bias is None:
        return torch.zeros_like(depth, dtype=torch.bool)
    valid = torch.isfinite(depth) & (depth > 0)
    return valid & ((depth > spec.split) if spec.bias == "far" else (depth < spec.split))


def degrade(depth: Tensor, spec: OracleSpec, generator: torch.Generator | None = None) -> Tensor:
    """The oracle's prediction: exact disparity of ``depth`` (N, H, W) metres, spoilt by ``spec``; (N, H, W) float32.

    ``generator`` (CPU) draws the affine and noise flaws; pixels without valid depth stay 0 until the affine flaw.
    """
    disparity = exact_disparity(depth)
    if spec.bias is not None and spec.bias_strength:
        target = 1.0 / spec.split
        pulled = target + (1.0 - spec.bias_strength) * (disparity - target)
        disparity = torch.where(biased_region(depth, spec), pulled, disparity)
    height, width = disparity.shape[-2:]
    if spec.resolution is not None and (height, width) != (spec.resolution, spec.resolution):
        small = F.interpolate(disparity[:, None], size=(spec.resolution,) * 2, mode="bilinear", align_corners=False,
                              antialias=True)
        disparity = F.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    if spec.noise:
        noise = torch.randn(disparity.shape, generator=generator).to(disparity.device)
        disparity = disparity * (1.0 + spec.noise * noise)
    if spec.affine:
        n = disparity.shape[0]
        u, v = (torch.rand((2, n), generator=generator) * 2.0 - 1.0).to(disparity.device)
        mean = disparity.mean(dim=(-2, -1))
        disparity = disparity * torch.exp(spec.affine * u)[:, None, None] + (spec.affine * v * mean)[:, None, None]
    return disparity
