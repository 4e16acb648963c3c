"""The README and CI must say what the code does."""
from pathlib import Path

from orchestrator.spec import describe, load_spec

ROOT = Path(__file__).resolve().parent.parent


def test_readme_spec_reference_matches_the_code():
    readme = (ROOT / "README.md").read_text()
    missing = [line for line in describe().splitlines() if line not in readme]
    assert not missing, f"README spec reference is stale, e.g. {missing[:3]}"


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text().splitlines()
    blocks = [readme[i + 1] for i, line in enumerate(readme[:20]) if line.strip() == "```" and i + 1 < len(readme)
              and readme[i + 1].strip() and not readme[i + 1].startswith("```")]
    install_and_quickstart, tests = blocks[0], blocks[1]
    assert "orchestrate submit specs/quickstart.yaml" in install_and_quickstart
    assert "torch==2.13.0" in install_and_quickstart.split("pip install -e")[0]
    assert "pytest" in tests
    assert tests in (ROOT / ".ci" / "run").read_text().splitlines()


def test_every_shipped_spec_is_valid():
    specs = sorted((ROOT / "specs").glob("*.yaml"))
    assert len(specs) >= 5
    for path in specs:
        load_spec(path)
