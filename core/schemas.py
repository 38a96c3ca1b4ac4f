"""JSON schemas of every pydantic model a user or a package file supplies, kept in specs/.

The schemas are generated, never edited: ``python -m deconv.schemas --write`` regenerates
them and ``--check`` (run by ``make test``) fails when the checked-in files have drifted from
the code.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import BaseModel


def schema_models() -> dict[str, type[BaseModel]]:
    from deconv.back_projectors import BackProjectorConfig
    from deconv.exporters.package_config import DeconvPackageConfig
    from deconv.exporters.tensorrt import EngineSidecar
    from deconv.psf import PSFMetadata
    from deconv.richardson_lucy import RLConfig
    from deconv.runtime.run import RunOptions
    from deconv.synth import SynthConfig
    from deconv.zoo.card import ModelCard
    from deconv.zoo.mrbcr import MRBCRConfig
    from deconv.zoo.rcan import RCANConfig
    from deconv.zoo.rln import RLNConfig

    return {
        "model_card": ModelCard,
        "rln_config": RLNConfig,
        "rcan_config": RCANConfig,
        "mrbcr_config": MRBCRConfig,
        "psf_metadata": PSFMetadata,
        "back_projector_config": BackProjectorConfig,
        "rl_config": RLConfig,
        "synth_config": SynthConfig,
        "run_options": RunOptions,
        "package_config": DeconvPackageConfig,
        "tensorrt_engine_sidecar": EngineSidecar,
    }


def render_schemas() -> dict[str, str]:
    return {
        f"{name}.schema.json": json.dumps(model.model_json_schema(), indent=2, sort_keys=True)
        + "\n"
        for name, model in schema_models().items()
    }


def write_schemas(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_schemas().items():
        path = folder / name
        path.write_text(text)
        written.append(path)
    return written


def stale_schemas(folder: Path) -> list[str]:
    """Names of schema files that are missing or differ from what the code generates."""
    return [
        name
        for name, text in render_schemas().items()
        if not (folder / name).exists() or (folder / name).read_text() != text
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deconv.schemas", description=__doc__)
    parser.add_argument("--folder", type=Path, default=Path("specs/schemas"))
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="regenerate the schema files")
    mode.add_argument("--check", action="store_true", help="fail if they are out of date")
    args = parser.parse_args(argv)
    if args.write:
        for path in write_schemas(args.folder):
            print(f"wrote {path}")
        return 0
    stale = stale_schemas(args.folder)
    if stale:
        print(f"out of date in {args.folder}: {', '.join(stale)}; run `make schemas`")
        return 1
    print(f"schemas in {args.folder} are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
