"""Open a bioimage.io package as a :class:`ModelSource`, without running code from the zip.

A package's ``pytorch_state_dict`` architecture is Python source; importing it executes
whatever the file contains. Packages written by ``deconv package`` say in
``config.deconv.model`` which registered network they hold, so the network is built from
this installation's registry and only the (pickle-free, ``weights_only``) state dict is read
from the zip. Any other package needs ``trust_code=True`` (``--trust-code``), which imports
its architecture file.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deconv.errors import DeconvError
from deconv.exporters.package_config import DeconvPackageConfig
from deconv.exporters.sources import ModelSource, build_registered, sha256_of


def import_network_file(path: Path, callable_name: str) -> Any:
    """Import ``callable_name`` from a standalone source file (executes that file)."""
    name = f"deconv_packaged_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise DeconvError(f"cannot import the architecture file {path.name}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and typing resolve names through sys.modules
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    if not hasattr(module, callable_name):
        raise DeconvError(f"{path.name} defines no {callable_name!r}")
    return getattr(module, callable_name)


def _named_files(node: Any) -> list[str]:
    """Every relative ``source`` file an rdf names (weights, tensors, covers, attachments)."""
    if isinstance(node, dict):
        found = []
        for key, value in node.items():
            if key == "source" and isinstance(value, str) and "://" not in value:
                found.append(value)
            else:
                found += _named_files(value)
        return found
    if isinstance(node, list):
        return [f for item in node for f in _named_files(item)]
    return []


def check_zip_contents(path: Path) -> None:
    """Name the first missing file (bioimageio reports a missing file only as a type error)."""
    import zipfile

    import yaml

    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            rdf_name = next((n for n in ("rdf.yaml", "bioimageio.yaml") if n in names), None)
            if rdf_name is None:
                raise DeconvError(f"{path} has no rdf.yaml: not a bioimage.io package")
            rdf = yaml.safe_load(archive.read(rdf_name))
    except zipfile.BadZipFile:
        raise DeconvError(f"{path} is not a zip file (corrupt or truncated package)") from None
    except yaml.YAMLError as error:
        raise DeconvError(f"{path}: rdf.yaml is not valid YAML ({error})") from None
    files = _named_files({k: v for k, v in rdf.items() if k != "config"})  # config: free-form
    missing = [f for f in files if f not in names]
    if missing:
        raise DeconvError(f"{path} is missing {', '.join(missing)} (named in its rdf.yaml)")


def load_description(path: str | Path, io_checks: bool = True) -> Any:
    """The package's ModelDescr; invalid packages (edited rdf, wrong sha256, missing file)
    raise a DeconvError naming the first problem."""
    from deconv.exporters.package_checks import first_problems, offline_settings

    offline_settings()
    from bioimageio.spec import InvalidDescr, load_model_description

    path = Path(path)
    if not path.exists():
        raise DeconvError(f"package {path} does not exist")
    if path.suffix == ".zip":
        check_zip_contents(path)
    try:
        descr = load_model_description(path, perform_io_checks=io_checks)
    except Exception as error:  # corrupt zips and unreadable YAML surface as many types
        lines = [x.strip() for x in str(error).splitlines() if x.strip()]
        if lines and lines[0].lower().startswith("invalid model description"):
            lines = lines[1:]  # the header; the reasons follow, one per line
        reason = "; ".join(lines[:2])[:400] or type(error).__name__
        raise DeconvError(f"{path} is not a valid bioimage.io package: {reason}") from None
    if isinstance(descr, InvalidDescr):
        problems = first_problems(descr.validation_summary)
        raise DeconvError(f"{path} is not a valid bioimage.io model: {'; '.join(problems[:3])}")
    return descr


def deconv_config(descr: Any) -> DeconvPackageConfig | None:
    extra = descr.config.model_extra or {}
    if "deconv" not in extra:
        return None
    return DeconvPackageConfig.model_validate(extra["deconv"])


def _read(descr: Any, file_descr: Any) -> bytes:
    from bioimageio.spec.utils import get_reader

    return get_reader(file_descr.source, sha256=file_descr.sha256).read()


def read_array(descr: Any, file_descr: Any) -> np.ndarray:
    import io

    return np.load(io.BytesIO(_read(descr, file_descr)), allow_pickle=False)


def _state_dict(descr: Any) -> dict:
    import io

    weights = descr.weights.pytorch_state_dict
    return torch.load(io.BytesIO(_read(descr, weights)), map_location="cpu", weights_only=True)


def _card_from_rdf(descr: Any, config: DeconvPackageConfig, model: Any) -> Any:
    """A card for networks the registry cannot describe (fixed-size RL graphs, foreign code)."""
    from deconv.zoo.card import ModelCard

    space = [a for a in descr.inputs[0].axes if a.type == "space"]

    def size(axis: Any) -> tuple[int, int]:
        return (int(axis.size), 0) if isinstance(axis.size, int) else (
            int(axis.size.min), int(axis.size.step))  # fmt: skip

    return ModelCard(
        name=config.model.registry_name, architecture=config.model.architecture,
        description=str(descr.description), ndim=len(space), trainable=False,
        min_size=tuple(size(a)[0] for a in space), step=tuple(size(a)[1] for a in space),
        halo=config.halo, normalization=config.normalization, loss="", citation=[],
        parameters=sum(p.numel() for p in model.parameters()),
    )  # fmt: skip


def _from_package_code(descr: Any, config: DeconvPackageConfig) -> tuple[Any, Any]:
    """--trust-code: import the package's architecture file; the card comes from the rdf."""
    import tempfile

    arch = descr.weights.pytorch_state_dict.architecture
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "architecture.py"
        file.write_bytes(_read(descr, arch))
        model = import_network_file(file, str(arch.callable))(**arch.kwargs)
    model.load_state_dict(_state_dict(descr))
    return model.eval(), _card_from_rdf(descr, config, model)


def load_package(path: str | Path, trust_code: bool = False) -> ModelSource:
    """The package's network (eval, CPU, float32) and the metadata ``deconv`` put in it."""
    from deconv.psf import PSF, load_psf
    from deconv.zoo import get_model_card, list_models

    path = Path(path)
    descr = load_description(path)
    config = deconv_config(descr)
    if config is None:
        raise DeconvError(
            f"{path} was not written by deconv (no config.deconv): deconv validate can test "
            "it, but running or exporting needs the card and PSF metadata deconv writes"
        )
    if descr.weights.pytorch_state_dict is None:
        raise DeconvError(f"{path} has no pytorch_state_dict weights to load")
    name = config.model.registry_name
    if config.model.architecture == "rl_fft":  # classical RL: our own graph, no registry entry
        from deconv.zoo.networks.rl_fft import RichardsonLucyFFT

        model = RichardsonLucyFFT(**config.model.config)
        model.load_state_dict(_state_dict(descr))
        model.eval()
        card = _card_from_rdf(descr, config, model)
    elif name in list_models(pretrained=False):
        model = build_registered(name, config.model.config, _state_dict(descr))
        card = get_model_card(name)
    elif trust_code:
        model, card = _from_package_code(descr, config)
    else:
        raise DeconvError(
            f"{path} holds {name!r}, which no installed plugin registers; install it, or "
            "pass --trust-code to run the architecture code inside the package"
        )
    psf = None
    if config.psf_file:
        attachment = next(
            (a for a in descr.attachments if Path(str(a.source)).name == config.psf_file), None
        )
        if attachment is not None:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                file = Path(tmp) / "psf.tif"
                file.write_bytes(_read(descr, attachment))
                data = load_psf(file).data
            if config.psf is not None:
                psf = PSF(data, config.psf)
    return ModelSource(
        name=str(descr.name),
        registry_name=config.model.registry_name,
        config=config.model.config,
        model=model,
        card=card,
        normalization=config.normalization,
        psf=psf,
        training=config.training,
        metrics=config.metrics,
        origin=f"package {path.name}",
        sha256=sha256_of(path) if path.is_file() else None,
        rl_refine=config.rl_refine,
    )
