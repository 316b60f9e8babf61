"""The mutation check's entries still apply to the tree (the check itself is slow and runs by hand:
``.venv/bin/python scripts/mutation_check.py``). When a listed line moves or changes, update its entry."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_check():
    spec = importlib.util.spec_from_file_location("mutation_check", ROOT / "scripts" / "mutation_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


CHECK = _load_check()


@pytest.mark.parametrize("mutation", CHECK.MUTATIONS, ids=lambda m: m.id)
def test_entry_applies_once_and_still_compiles(mutation) -> None:
    problem = CHECK._check_entry(mutation)
    assert problem is None, f"scripts/mutation_check.py entry {mutation.id!r}: {problem}"
    source = (ROOT / mutation.file).read_text(encoding="utf-8")
    mutated = source.replace(mutation.original, mutation.mutated, 1)
    ast.parse(mutated, filename=mutation.file)  # a bug to catch, not a syntax error
    assert ast.dump(ast.parse(mutated)) != ast.dump(ast.parse(source)), "the mutation changes no code"


def test_entry_ids_are_unique() -> None:
    ids = [m.id for m in CHECK.MUTATIONS]
    assert len(ids) == len(set(ids))


def test_stale_entries_and_unknown_ids_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    stale = CHECK.Mutation("gone", "eval/metrics.py", "no such line in the file", "x", ("tests/eval",), "why")
    assert "occurs 0 times" in CHECK._check_entry(stale)
    with pytest.raises(SystemExit) as info:
        CHECK.main(["--only", "no-such-mutation"])
    assert info.value.code == 2 and "no-such-mutation" in capsys.readouterr().err
