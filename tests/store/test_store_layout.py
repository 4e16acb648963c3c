"""The layout's path makers: every path they make is classified back as the kind it was made for, so a file the
store writes is never foreign to it."""
import re

import pytest

from orchestrator.store.layout import LAYOUT, classify, file_name, layout_dir, layout_path, table_dir

# layout_path makes the first pattern of a kind under a directory (later ones are older schemas, only read).
MADE = list({(kind, pattern.split("/", 1)[0]): (kind, pattern) for kind, pattern in reversed(LAYOUT)}.values())[::-1]
SAMPLE = {"sweep": "sw-1.a", "key": "ab12", "method": "cts_kl", "attempt": 3, "token": "0f9e", "rest": "stamp/x/y"}


@pytest.mark.parametrize("kind,pattern", MADE, ids=[p for _, p in MADE])
def test_each_layout_path_is_classified_as_its_kind(kind, pattern):
    top = pattern.split("/", 1)[0]
    parts = {name: SAMPLE[name] for name in re.findall(r"<(\w+)>", pattern) + (["rest"] if "**" in pattern else [])}
    path = layout_path("/root", kind, top=top, **parts)
    assert path.startswith("/root/")
    found, named = classify(path[len("/root/"):], False)
    assert found == kind
    assert {k: v for k, v in named.items() if v is not None} == {k: str(v) for k, v in parts.items() if k != "rest"}
    directory = layout_dir("/root", kind, top=top, **parts)
    assert path.startswith(directory + "/") and classify(directory[len("/root/"):], True)[0] == "directory"


def test_table_directories_and_file_names():
    assert table_dir("/r", "points") == "/r/points"
    assert table_dir("/r", "points", "s") == "/r/points/sweep=s"
    assert table_dir("/r", "points", "s", "ltr") == "/r/points/sweep=s/method=ltr"
    assert table_dir("/r", "curves", "s", "ltr") == "/r/curves/sweep=s"  # curves hold method as a column
    assert file_name("compacted", "stages", token="ff") == "compacted-ff.parquet"
    with pytest.raises(KeyError):
        layout_path("/r", "no such kind")
