"""What every zoo model declares about itself: its config and its card.

A model's *config* is a pydantic model with ``extra="forbid"`` and a literal ``architecture``
discriminator whose ``model_dump()`` is exactly the keyword arguments of the model's
constructor, so a config round-trips through JSON (run directories, bioimage.io packages)
into the same network. A model's *card* is what runtimes, exporters and packagers need to
know without reading its code: dimensionality, input size constraints, the halo for tiling,
normalisation, loss and citation.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from deconv.errors import DeconvError


class ModelConfig(BaseModel):
    """Base of every architecture config (subclasses add ``architecture`` and fields)."""

    model_config = ConfigDict(extra="forbid")


class Citation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str
    doi: str | None = None


class Normalization(BaseModel):
    """How raw intensities are mapped before the network sees them."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["percentile", "min_max", "none"] = "percentile"
    low: float = Field(0.0, ge=0, le=100, description="lower percentile")
    high: float = Field(99.8, ge=0, le=100, description="upper percentile")
    reference_floor: float | None = Field(
        None,
        ge=0,
        description="the highest dark floor (1st percentile of the 5-voxel box mean of the "
        "normalised image) among the training inputs; at inference an image whose floor is "
        "higher is scaled down to it (floor matching, deconv.normalization). None: off",
    )

    def with_percentiles(
        self, percentiles: tuple[float, float] | None, owner: str
    ) -> Normalization:
        """This normalisation with other (low, high) percentiles, for ``--percentiles`` of
        ``deconv train`` and ``deconv run``: where the high one sits decides how bright a
        sparse sample reaches the network (benchmarks/quality-log.md, session 36)."""
        if percentiles is None:
            return self
        if self.kind != "percentile":
            raise DeconvError(
                f"--percentiles: {owner} normalises by {self.kind}, not by percentiles"
            )
        low, high = checked_percentiles(percentiles)
        if (low, high) == (self.low, self.high):
            return self
        # the reference floor was measured in the trained percentiles' units
        return self.percentiles_only().model_copy(update={"low": low, "high": high})

    def percentiles_only(self) -> Normalization:
        """This normalisation without floor matching (``deconv run --no-match-floor``)."""
        return self.model_copy(update={"reference_floor": None})


def checked_percentiles(value: tuple[float, float]) -> tuple[float, float]:
    """A (low, high) percentile pair, or a ValueError saying what is wrong with it."""
    low, high = value
    if not 0 <= low < high <= 100:
        raise ValueError(f"percentiles needs 0 <= LOW < HIGH <= 100, got {tuple(value)}")
    return float(low), float(high)


PercentilePair = Annotated[tuple[float, float], AfterValidator(checked_percentiles)]
"""A config field's (low, high) percentile pair, checked by :func:`checked_percentiles`."""


class ModelCard(BaseModel):
    """The facts about one registered model (an architecture plus its settings)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    architecture: str
    description: str
    ndim: Literal[2, 3] | None = Field(description="spatial dimensions; None: as the PSF")
    trainable: bool = True
    min_size: tuple[int, ...] = Field(description="smallest input size per spatial axis")
    step: tuple[int, ...] = Field(description="valid sizes are min_size + k * step")
    halo: tuple[int, ...] = Field(description="voxels per side a tile needs for exact output")
    normalization: Normalization = Field(default_factory=Normalization)
    loss: str
    citation: list[Citation]
    parameters: int | None = Field(None, description="trainable parameters")
    tiling: Literal["exact", "blend"] = Field(
        "exact",
        description="exact: the halo bounds the receptive field, tiles are cropped and equal "
        "a whole-volume pass; blend: outputs depend on the whole tile (global pooling), tiles "
        "overlap and are blended",
    )


class TrainingDefaults(BaseModel):
    """An architecture's published training recipe, the default of ``deconv train``."""

    model_config = ConfigDict(extra="forbid")

    learning_rate: float = Field(1e-3, gt=0)
    decay_rate: float = Field(1.0, gt=0, le=1, description="multiply the rate by this...")
    decay_every: int = Field(1000, ge=1, description="...every this many steps")
    batch_size: int = Field(4, ge=1)
    patch: tuple[int, ...] = Field((32, 32, 32), description="training patch per axis")


def count_parameters(model) -> int:
    """Trainable parameters of a built network: the number a card reports."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
