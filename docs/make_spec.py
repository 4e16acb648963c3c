"""Regenerate the field list of docs/spec.md from the code: `python docs/make_spec.py`.

The list is what `orchestrate validate SPEC --explain` prints (orchestrator.spec.describe); a test checks
that the file holds exactly that, so a new field, model or dataset option only needs this command run."""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.spec import describe  # noqa: E402

SPEC_MD = ROOT / "docs" / "spec.md"
FIELD_LIST = re.compile(r"(```\n)(.*?)(```)", flags=re.S)


def with_current_fields(text: str) -> str:
    """docs/spec.md's text with its first code block replaced by the code's field list."""
    return FIELD_LIST.sub(lambda m: m.group(1) + describe() + "\n" + m.group(3), text, count=1)


if __name__ == "__main__":
    SPEC_MD.write_text(with_current_fields(SPEC_MD.read_text()))
    print(f"wrote {SPEC_MD}")
