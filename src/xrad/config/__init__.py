"""Run configuration: YAML files a user can read and diff, loaded into validated dataclasses.

A config has one section per concern (:mod:`~xrad.config.sections`); every paper hyper-parameter is a
named default there, so a YAML file only states what differs. :mod:`~xrad.config.loader` reads YAML,
applies ``--set section.key=value`` overrides and validates everything at load time, naming the key.
A detector's own sections are passed in by :func:`xrad.methods.registry.load_config`.
"""

from xrad.config.loader import (
    CONFIG_DIR,
    apply_overrides,
    build_config,
    comparable_config,
    config_to_dict,
    dump_config,
    load_config,
    merge_overrides,
    milestone_epochs,
    packaged_configs,
    parse_override,
    read_config_source,
    read_yaml,
    resolve_config_path,
)
from xrad.config.sections import (
    SHARED_SECTIONS,
    ADAugment,
    Config,
    ContrastiveAugment,
    DataConfig,
    FinetuneConfig,
    KnnConfig,
    ModelConfig,
    PretrainConfig,
    TrainerConfig,
)

__all__ = [
    "CONFIG_DIR",
    "SHARED_SECTIONS",
    "ADAugment",
    "Config",
    "ContrastiveAugment",
    "DataConfig",
    "FinetuneConfig",
    "KnnConfig",
    "ModelConfig",
    "PretrainConfig",
    "TrainerConfig",
    "apply_overrides",
    "build_config",
    "comparable_config",
    "config_to_dict",
    "dump_config",
    "load_config",
    "merge_overrides",
    "milestone_epochs",
    "packaged_configs",
    "parse_override",
    "read_config_source",
    "read_yaml",
    "resolve_config_path",
]
