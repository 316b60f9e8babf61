"""Configuration: defaults < TOML file < environment < --set, with clear errors."""

from __future__ import annotations

import pytest

from geosleuth.config import Config, load_config
from geosleuth.errors import ConfigError


def test_defaults_point_at_real_public_models():
    config = load_config(environ={"GEOSLEUTH__VLM__RECIPE": "gpu"})
    assert config.encoders.image_model == "openai/clip-vit-large-patch14"
    assert config.vlm.server_model == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert config.vlm.model == "Qwen/Qwen2.5-VL-7B-Instruct"  # the GPU recipe: a model that can geolocate
    assert config.index.gallery is None  # a fresh install has no image gallery
    assert config.prompts.neighbor_counts == [0, 5, 10, 15]


def test_the_cpu_recipe_is_light_and_every_setting_can_still_be_overridden(tmp_path):
    from geosleuth.prompts.schema import answer_token_budget

    config = load_config(environ={"GEOSLEUTH__VLM__DEVICE": "cpu"})
    assert (config.vlm.recipe, config.vlm.recipe_reason) == ("cpu", "vlm.device is cpu")
    assert config.vlm.model == "llava-hf/llava-interleave-qwen-0.5b-hf"
    assert config.prompts.neighbor_counts == [0, 5] and config.vlm.samples_per_variant == 1
    assert config.vlm.max_new_tokens == answer_token_budget() < 768
    cfg = tmp_path / "g.toml"
    cfg.write_text("[vlm]\nsamples_per_variant = 3\n")
    mixed = load_config(cfg, overrides=["prompts.neighbor_counts=[0, 10]"], environ={"GEOSLEUTH__VLM__DEVICE": "cpu"})
    assert mixed.vlm.samples_per_variant == 3 and mixed.prompts.neighbor_counts == [0, 10]
    assert mixed.vlm.max_new_tokens == answer_token_budget()  # the rest still from the recipe


def test_auto_recipe_follows_the_gpu_memory():
    from geosleuth.recipes import apply_recipe

    for memory, expected in [(None, "cpu"), (8 * 2**30, "gpu-small"), (80 * 2**30, "gpu")]:
        tree: dict = {}
        name, why = apply_recipe(tree, gpu_memory=lambda m=memory: m)
        assert name == expected == tree["vlm"]["recipe"], why
    tree = {"vlm": {"model": "my/own-vlm"}}
    apply_recipe(tree, gpu_memory=lambda: 80 * 2**30)
    assert tree["vlm"]["model"] == "my/own-vlm"  # a recipe never replaces what the user set


def test_a_server_backend_gets_the_full_recipe_whatever_this_machine_has():
    """The server decodes: a laptop or a CPU-only Ray head asking a GPU server must not get the light CPU
    recipe; a CPU server is the user's to say."""
    config = load_config(overrides=["vlm.backend=openai", "vlm.device=cpu"], environ={})
    assert config.vlm.recipe == "gpu" and "server decodes" in (config.vlm.recipe_reason or "")
    assert config.prompts.neighbor_counts == [0, 5, 10, 15] and config.vlm.samples_per_variant == 2
    cpu_server = load_config(overrides=["vlm.backend=openai", "vlm.recipe=cpu"], environ={})
    assert cpu_server.prompts.neighbor_counts == [0, 5] and cpu_server.vlm.samples_per_variant == 1


def test_config_show_states_the_recipe_and_why():
    from typer.testing import CliRunner

    from geosleuth.cli import app

    result = CliRunner().invoke(app, ["--set", "vlm.device=cpu", "config", "show"])
    assert result.exit_code == 0, result.output
    assert "# device recipe: cpu (vlm.device is cpu)" in result.output
    assert 'recipe = "cpu"' in result.output and "max_new_tokens = " in result.output


def test_precedence_file_then_env_then_flags(tmp_path):
    cfg = tmp_path / "g.toml"
    cfg.write_text('[vlm]\nbackend = "openai"\ntimeout_s = 5\n[retrieval]\nk_gps = 3\n')
    env = {"GEOSLEUTH__RETRIEVAL__K_GPS": "4", "GEOSLEUTH__VLM__TIMEOUT_S": "6"}
    config = load_config(cfg, overrides=["vlm.timeout_s=7", "prompts.neighbor_counts=[0, 5]"], environ=env)
    assert config.vlm.backend == "openai"  # file
    assert config.retrieval.k_gps == 4  # env beats file
    assert config.vlm.timeout_s == 7  # flag beats env
    assert config.prompts.neighbor_counts == [0, 5]


def test_config_file_from_environment_variable(tmp_path):
    cfg = tmp_path / "g.toml"
    cfg.write_text("[verify]\ntop_k = 9\n")
    assert load_config(environ={"GEOSLEUTH_CONFIG": str(cfg)}).verify.top_k == 9


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"overrides": ["vlm.backend=gpt"]}, "vlm.backend"),
        ({"overrides": ["nosuch.key=1"]}, "unknown section 'nosuch'"),
        ({"overrides": ["vlm.no_such_key=1"]}, "no_such_key"),
        ({"overrides": ["vlm.timeout_s"]}, "SECTION.KEY=VALUE"),
        ({"overrides": ["retrieval.k_gps=-1"]}, "k_gps"),
        ({"environ": {"GEOSLEUTH__VLM__BACKEND": "carrier-pigeon"}}, "vlm.backend"),
    ],
)
def test_bad_settings_name_the_setting(kwargs, message):
    kwargs.setdefault("environ", {})
    with pytest.raises(ConfigError, match=message):
        load_config(**kwargs)


def test_bad_and_missing_files_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[vlm\n")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_config(bad, environ={})
    with pytest.raises(ConfigError, match="missing.toml"):
        load_config(tmp_path / "missing.toml", environ={})


def test_config_hash_is_stable_and_changes_with_settings():
    a, b = Config(), Config()
    assert a.config_hash() == b.config_hash()
    b.vlm.temperature = 0.1
    assert a.config_hash() != b.config_hash()


def test_effective_config_round_trips_through_its_toml(tmp_path):
    config = load_config(overrides=["vlm.backend=none", "index.gallery=/data/store"], environ={})
    path = tmp_path / "shown.toml"
    path.write_text(config.to_toml())
    assert load_config(path, environ={}) == config
