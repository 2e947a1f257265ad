"""`make run PRESET=<name>`: write params.yaml with the preset applied (the previous file is kept
as params.yaml.bak), so that DVC tracks exactly what runs and `dvc params diff` shows it."""
import shutil

import yaml

from pipeline.io import write_text
from pipeline.config.params import read_yaml
from pipeline.config.presets import preset_params
from pipeline.models.catalog import model_configs
from pipeline.paths import ROOT
from pipeline.stage import run_stage


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python -m stages.preset NAME")
    params = ROOT / "params.yaml"
    source = f"params.yaml + presets/{argv[0]}.yaml"
    merged, p = preset_params(argv[0], read_yaml(params), "params.yaml")  # validated before anything is written
    model_configs(p, source)
    shutil.copy2(params, ROOT / "params.yaml.bak")
    header = f"# params.yaml with preset {argv[0]!r} applied (previous version: params.yaml.bak)\n"
    write_text(params, header + yaml.safe_dump(merged, sort_keys=False, default_flow_style=None))
    print(f"params.yaml now holds preset {argv[0]}; the previous file is params.yaml.bak")


if __name__ == "__main__":
    run_stage(main, tracked=False)
