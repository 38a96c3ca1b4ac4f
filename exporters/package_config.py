"""What ``deconv`` writes under ``config.deconv`` of a bioimage.io model (format in specs/).

bioimage.io has no field for a PSF, a registry name or training provenance, but its
``config`` is free-form and survives packaging, so this model is where a package keeps what
a microscopist needs to trust it (which PSF, which normalisation, how it was trained, how
well it did) and what ``deconv`` needs to rebuild it without running code from the zip.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from deconv.psf import PSFMetadata
from deconv.zoo.card import Normalization

PACKAGE_FORMAT = "deconv-package/1"


class PackagedModel(BaseModel):
    """How to rebuild the network through the registry (no code from the package)."""

    model_config = ConfigDict(extra="forbid")

    registry_name: str = Field(description="zoo name, e.g. rln3d (or rl for classical RL)")
    architecture: str
    config: dict[str, Any] = Field(description="the architecture config, = constructor kwargs")


class WeightsCheck(BaseModel):
    """One verification of a weights format against PyTorch, as measured when packaging."""

    model_config = ConfigDict(extra="forbid")

    weights_format: str
    shape: tuple[int, ...]
    max_abs_error: float
    relative_tolerance: float
    absolute_tolerance: float
    passed: bool


class DeconvPackageConfig(BaseModel):
    """``config.deconv`` of a package written by ``deconv package``."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["deconv-package/1"] = PACKAGE_FORMAT
    model: PackagedModel
    psf: PSFMetadata | None = Field(None, description="the PSF the model is for")
    psf_file: str | None = Field(None, description="attachment holding the PSF (TIFF)")
    normalization: Normalization
    halo: tuple[int, ...] = Field(description="receptive field per space axis (voxels)")
    training: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(
        default_factory=dict, description="final validation PSNR (dB) / SSIM of training"
    )
    tolerances: dict[str, tuple[float, float]] = Field(
        description="(relative, absolute) per weights format, for the test tensors"
    )
    checks: list[WeightsCheck] = Field(default_factory=list)
    source: str = Field("", description="what was packaged: pretrained name or run directory")
    rl_refine: int | None = Field(
        None,
        ge=1,
        description="RL iterations `deconv run --rl-refine auto` runs from the output (with "
        "the PSF above), as the shipped weights record them",
    )
