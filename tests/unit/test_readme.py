import re
from pathlib import Path

from omni_rtc.config import ENV_VARS, OPTIONS, options_markdown

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_readme_documents_every_flag_and_env_var() -> None:
    for option in OPTIONS:
        assert f"`{option.flag}`" in README, option.flag
    for var in ENV_VARS:
        assert var in README, var


def test_readme_configuration_table_is_generated_from_the_options() -> None:
    """Regenerate with: python -c 'from omni_rtc.config import options_markdown as m; print(m())'"""
    assert options_markdown() in README


def test_readme_has_exactly_two_setup_commands() -> None:
    section = README.split("## Set-up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    assert len(re.findall(r"```sh\n(.+?)\n```", section, re.S)) == 2
    assert "omni-rtc serve" in section
    assert "tests/run" in section


def test_readme_screenshot_exists() -> None:
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README):
        assert (Path(__file__).resolve().parents[2] / image).is_file(), image
