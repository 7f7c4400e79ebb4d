"""Reading a built CPU library's assembly in tests: the text, and which functions hold an
instruction (so a check names the kernel that uses it, not just the library)."""
from __future__ import annotations

import re


def asm_of(ex) -> str:
    """The assembly of a built executable's LLVM modules."""
    return "\n".join(m.inspect_source("asm") for m in [ex.mod, *ex.mod.imports] if m.kind == "llvm")


def functions_with(asm: str, instruction: str) -> set[str]:
    """The assembly's functions (top-level labels) whose bodies hold `instruction`."""
    found, name = set(), None
    for line in asm.splitlines():
        if line and not line[0].isspace() and line.endswith(":") and not line.startswith("."):
            name = line[:-1]
        elif name and instruction in line:
            found.add(name)
    return found


def stores_in_loops(asm: str, instruction: str) -> list[tuple[str, int, int]]:
    """(function, `instruction` count, vector stores) for each innermost loop (a block that jumps
    back to its own label) holding `instruction`: a dot-product loop whose accumulators stay in
    registers stores nothing."""
    found, name, label, body = [], None, None, []
    for line in asm.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            if not line.startswith("."):
                name = line[:-1]
            label, body = line[:-1], []
            continue
        body.append(line)
        parts = line.split()
        if label and len(parts) == 2 and parts[0].startswith("j") and parts[1] == label:
            count = sum(instruction in b for b in body)
            if count:
                stores = sum(bool(_VECTOR_STORE.search(b)) for b in body)
                found.append((name, count, stores))
            label = None
    return found


_VECTOR_STORE = re.compile(r"\bv?mov\w*\s+%[xyz]mm\d+,\s*[^%\s]*\(")
