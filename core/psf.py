"""Point spread functions: generation, loading, checking, resampling, and their metadata.

Every PSF that reaches a deconvolution is *prepared*: odd-shaped, centred on its peak,
non-negative and normalised to sum 1. A PSF whose voxel size differs from the image's is
resampled with a message; a silent mismatch is the most common complaint in peers' trackers.
:class:`PSFMetadata` is the record that travels with a PSF into model packages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.ndimage
from pydantic import BaseModel, ConfigDict, Field, field_validator

from deconv.errors import DeconvError

PSFGenerator = Literal["vectorial", "scalar", "gaussian", "measured"]

# A voxel size is "the same" within this relative tolerance (metadata often rounds to 3-4 digits).
VOXEL_SIZE_RTOL = 0.01


class PSFMetadata(BaseModel):
    """What a PSF is and where it came from; stored in PSF TIFFs and in model packages.

    Distances are micrometres; ``voxel_size`` is ordered like the array axes ((dz,) dy, dx).
    Optical parameters are ``None`` for measured PSFs whose provenance is unknown.
    """

    model_config = ConfigDict(extra="forbid")

    generator: PSFGenerator
    na: float | None = Field(None, gt=0, le=1.7, description="numerical aperture")
    wavelength_emission: float | None = Field(None, gt=0, description="µm")
    wavelength_excitation: float | None = Field(None, gt=0, description="µm (confocal)")
    ni: float | None = Field(None, gt=1, description="immersion refractive index (actual)")
    ni0: float | None = Field(None, gt=1, description="immersion refractive index (design)")
    ns: float | None = Field(None, gt=1, description="sample refractive index")
    tg: float | None = Field(None, ge=0, description="coverslip thickness, µm (actual)")
    tg0: float | None = Field(None, ge=0, description="coverslip thickness, µm (design)")
    ng: float | None = Field(None, gt=1, description="coverslip refractive index (actual)")
    ng0: float | None = Field(None, gt=1, description="coverslip refractive index (design)")
    ti0: float | None = Field(None, gt=0, description="working distance, µm")
    depth: float = Field(0.0, ge=0, description="emitter depth above the coverslip, µm")
    voxel_size: tuple[float, ...] = Field(description="((dz,) dy, dx) in µm")
    unit: Literal["micrometer"] = "micrometer"
    shape: tuple[int, ...]
    normalization: Literal["sum"] = "sum"
    centered: bool = True
    source: str | None = Field(None, description="file a measured PSF was read from")

    @field_validator("voxel_size")
    @classmethod
    def _positive_voxels(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if len(value) not in (2, 3) or any(v <= 0 for v in value):
            raise ValueError(f"voxel_size must be 2 or 3 positive numbers, got {value}")
        return value


@dataclass(frozen=True)
class PSF:
    """A prepared PSF (odd, centred, non-negative, sum 1) and its metadata."""

    data: np.ndarray
    metadata: PSFMetadata

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def voxel_size(self) -> tuple[float, ...]:
        return self.metadata.voxel_size


def generate_psf(
    *,
    model: Literal["vectorial", "scalar", "gaussian"] = "vectorial",
    shape: Sequence[int] = (33, 65, 65),
    na: float = 1.4,
    wavelength: float = 0.52,
    ni: float = 1.515,
    ns: float = 1.33,
    dxy: float = 0.065,
    dz: float = 0.2,
    depth: float = 0.0,
    ni0: float | None = None,
) -> PSF:
    """Widefield PSF from psfmodels (Aguet vectorial, Gibson-Lanni scalar, or Gaussian).

    ``shape`` is (nz, ny, nx) or (ny, nx) for a 2D in-focus PSF; every size must be odd so the
    PSF has a centre voxel. psfmodels makes square lateral planes, so the larger lateral size
    is computed and cropped.
    """
    import psfmodels

    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or any(s < 1 or s % 2 == 0 for s in shape):
        raise DeconvError(f"PSF shape must be 2 or 3 odd sizes (e.g. 33,65,65), got {shape}")
    if not 0 < na < ni:
        raise DeconvError(f"NA {na} must be positive and below the immersion index {ni}")
    nz = shape[0] if len(shape) == 3 else 1
    nxy = max(shape[-2:])
    ni0 = ni if ni0 is None else ni0
    optics = dict(NA=na, wvl=wavelength, ni=ni, ni0=ni0, ns=ns, model=model, pz=depth)
    # Focus positions centred on the intensity peak: with a refractive-index mismatch and
    # an emitter depth, spherical aberration moves the peak away from the nominal focus,
    # and cropping around it afterwards would lose planes.
    shift = _focal_shift(nz, dz, dxy, depth, optics)
    planes = depth + shift + (np.arange(nz) - nz // 2) * dz
    data = psfmodels.make_psf(planes, nxy, dxy=dxy, **optics)
    data = data.reshape((nz, nxy, nxy))
    cy, cx = (nxy - shape[-2]) // 2, (nxy - shape[-1]) // 2
    data = data[:, cy : cy + shape[-2], cx : cx + shape[-1]]
    if len(shape) == 2:
        data = data[0]
    voxel_size = (dz, dxy, dxy) if len(shape) == 3 else (dxy, dxy)
    data = prepare_psf(data)
    metadata = PSFMetadata(
        generator=model, na=na, wavelength_emission=wavelength, ni=ni, ni0=ni0, ns=ns,
        tg=170.0, tg0=170.0, ng=1.515, ng0=1.515, ti0=150.0, depth=depth,
        voxel_size=voxel_size, shape=data.shape,
    )  # fmt: skip
    return PSF(data, metadata)


def regenerate_psf(metadata: PSFMetadata) -> PSF:
    """Rebuild a computed PSF from its metadata (how pretrained models carry their PSF)."""
    if metadata.generator not in ("vectorial", "scalar", "gaussian") or metadata.na is None:
        raise DeconvError(
            f"a {metadata.generator!r} PSF cannot be regenerated from its metadata; "
            "use the PSF file it came with"
        )
    size = metadata.voxel_size
    return generate_psf(
        model=metadata.generator, shape=metadata.shape, na=metadata.na,
        wavelength=metadata.wavelength_emission or 0.52, ni=metadata.ni or 1.515,
        ns=metadata.ns or 1.33, dxy=size[-1], dz=size[0] if len(size) == 3 else 0.2,
        depth=metadata.depth, ni0=metadata.ni0,
    )  # fmt: skip


def _focal_shift(nz: int, dz: float, dxy: float, depth: float, optics: dict) -> float:
    """Axial position (µm, relative to ``depth``) of the PSF's peak, to the nearest plane.

    Found on the optical axis alone (a 3x3 lateral patch), over a range wide enough for the
    focal shifts of common objectives, so it costs a fraction of the PSF itself.
    """
    import psfmodels

    if nz == 1 or depth == 0:
        return 0.0
    reach = max(nz, round(2 * depth / dz) + nz)
    positions = depth + (np.arange(-reach, reach + 1)) * dz
    axial = psfmodels.make_psf(positions, 3, dxy=dxy, **optics)[:, 1, 1]
    return float(positions[int(np.argmax(axial))] - depth)


def prepare_psf(data: np.ndarray) -> np.ndarray:
    """Make a PSF usable: reject unusable ones, crop it odd and centred on its peak, sum 1.

    The peak is found on a lightly smoothed copy so that one hot pixel in a measured PSF does
    not decide the centre. Cropping (never rolling) keeps the wings where they were measured.
    """
    data = np.asarray(data, dtype=np.float64)
    if data.ndim not in (2, 3):
        raise DeconvError(f"a PSF must be 2D or 3D, got {data.ndim}D with shape {data.shape}")
    if not np.all(np.isfinite(data)):
        raise DeconvError("the PSF contains NaN or Inf values")
    peak = float(data.max())
    if peak <= 0:
        raise DeconvError("the PSF is all zero (or negative): it carries no signal")
    if data.min() < -1e-6 * peak:
        raise DeconvError(
            f"the PSF has negative values (min {data.min():.3g}, max {peak:.3g}); "
            "subtract its background and clip it at 0 before using it"
        )
    data = np.clip(data, 0, None)
    smooth = scipy.ndimage.gaussian_filter(data, 1.0) if data.size > 27 else data
    centre = np.unravel_index(int(np.argmax(smooth)), data.shape)
    slices = []
    for c, n in zip(centre, data.shape, strict=True):
        half = min(c, n - 1 - c)
        slices.append(slice(c - half, c + half + 1))
    data = data[tuple(slices)]
    return (data / data.sum()).astype(np.float32)


# a flip is a symmetry of a PSF if it changes it by less than this fraction of its peak
SYMMETRY_TOLERANCE = 1e-3


def symmetric_axes(data: np.ndarray, tolerance: float = SYMMETRY_TOLERANCE) -> tuple[int, ...]:
    """The axes a PSF is mirror-symmetric about (flipping one leaves the imaging unchanged).

    Shared by training augmentation and ``--tta``: a flip along any other axis pairs an image
    with the mirrored PSF, which the microscope does not have. A widefield PSF imaging into
    water through oil is symmetric laterally but not along z (spherical aberration: the z
    flip changes it by ~7% of its peak).
    """
    data = np.asarray(data, dtype=np.float64)
    peak = float(np.abs(data).max())
    return tuple(
        axis for axis in range(data.ndim)
        if np.abs(np.flip(data, axis) - data).max() <= tolerance * peak
    )  # fmt: skip


def fwhm(data: np.ndarray) -> tuple[float, ...]:
    """Full width at half maximum through the peak along each axis, in voxels (interpolated)."""
    peak_index = np.unravel_index(int(np.argmax(data)), data.shape)
    widths = []
    for axis in range(data.ndim):
        index = list(peak_index)
        index[axis] = slice(None)
        profile = np.asarray(data[tuple(index)], dtype=np.float64)
        widths.append(_profile_fwhm(profile, peak_index[axis]))
    return tuple(widths)


def _profile_fwhm(profile: np.ndarray, peak: int) -> float:
    half = profile[peak] / 2.0

    def crossing(step: int) -> float:
        i = peak
        while 0 <= i + step < len(profile) and profile[i + step] > half:
            i += step
        if not 0 <= i + step < len(profile):
            return float(i)  # never falls to half: the width is at least the array
        a, b = profile[i], profile[i + step]
        return i + step * (a - half) / (a - b)

    return crossing(1) - crossing(-1)


def same_voxel_size(a: Sequence[float], b: Sequence[float], rtol: float = VOXEL_SIZE_RTOL) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= rtol * max(x, y) for x, y in zip(a, b))


def resample_psf(psf: PSF, voxel_size: Sequence[float]) -> PSF:
    """The PSF on another voxel grid (cubic spline, clipped at 0, re-prepared)."""
    voxel_size = tuple(float(v) for v in voxel_size)
    if len(voxel_size) != psf.ndim:
        raise DeconvError(f"cannot resample a {psf.ndim}D PSF to voxel size {voxel_size}")
    zoom = [p / v for p, v in zip(psf.voxel_size, voxel_size, strict=True)]
    out_shape = [max(1, round(n * z)) for n, z in zip(psf.data.shape, zoom, strict=True)]
    out_shape = [s if s % 2 else s + 1 for s in out_shape]
    data = _resample_centred(psf.data.astype(np.float64), zoom, out_shape)
    data = prepare_psf(np.clip(data, 0, None))
    metadata = psf.metadata.model_copy(update={"voxel_size": voxel_size, "shape": data.shape})
    return PSF(data, metadata)


def _resample_centred(data: np.ndarray, zoom: Sequence[float], out_shape: Sequence[int]):
    """Map output voxel i to input coordinate c_in + (i - c_out) / zoom, so centres coincide."""
    grids = np.meshgrid(
        *[
            (np.arange(n_out) - n_out // 2) / z + n_in // 2
            for n_in, n_out, z in zip(data.shape, out_shape, zoom, strict=True)
        ],
        indexing="ij",
    )
    return scipy.ndimage.map_coordinates(data, grids, order=3, mode="constant", cval=0.0)


def load_psf(path: str | Path, voxel_size: Sequence[float] | None = None) -> PSF:
    """Read a PSF TIFF (ours carry :class:`PSFMetadata`; others are treated as measured)."""
    from deconv.io import read_image

    image = read_image(path)
    data = prepare_psf(image.data)
    stored = image.extra.get("deconv.psf")
    if stored is not None:
        metadata = PSFMetadata.model_validate(stored)
        metadata = metadata.model_copy(update={"shape": data.shape})
    else:
        vs = voxel_size or image.voxel_size
        if vs is None:
            raise DeconvError(
                f"{path} has no voxel size in its metadata; pass the PSF voxel size explicitly"
            )
        metadata = PSFMetadata(
            generator="measured", voxel_size=tuple(vs), shape=data.shape, source=str(path)
        )
    if voxel_size is not None and not same_voxel_size(metadata.voxel_size, voxel_size):
        metadata = metadata.model_copy(update={"voxel_size": tuple(voxel_size)})
    return PSF(data, metadata)


def save_psf(psf: PSF, path: str | Path) -> Path:
    from deconv.io import write_image

    return write_image(
        path,
        psf.data,
        voxel_size=psf.voxel_size,
        extra={"deconv.psf": psf.metadata.model_dump(mode="json")},
    )


def psf_for_image(psf: PSF, image_voxel_size: Sequence[float] | None, notify=print) -> PSF:
    """The PSF matched to an image's voxel grid, saying what was done and why.

    An image without voxel size metadata is assumed to share the PSF's grid (and we say so),
    because refusing to run would stop most users with plain TIFFs.
    """
    if image_voxel_size is None:
        notify(
            f"the image has no voxel size; assuming the PSF's {_fmt(psf.voxel_size)} µm "
            "(pass --voxel-size to set it)"
        )
        return psf
    if len(image_voxel_size) != psf.ndim:
        raise DeconvError(
            f"image voxel size {tuple(image_voxel_size)} has {len(image_voxel_size)} axes "
            f"but the PSF is {psf.ndim}D"
        )
    if same_voxel_size(psf.voxel_size, image_voxel_size):
        return psf
    resampled = resample_psf(psf, image_voxel_size)
    notify(
        f"PSF voxel size {_fmt(psf.voxel_size)} µm differs from the image's "
        f"{_fmt(image_voxel_size)} µm: resampled the PSF from {_shape(psf.data.shape)} "
        f"to {_shape(resampled.data.shape)}"
    )
    return resampled


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)
