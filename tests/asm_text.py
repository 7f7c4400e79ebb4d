"""Reading a built CPU library's assembly in tests: the text, and which functions hold an
instruction (so a check names the kernel that uses it, not just the library)."""
from __future__ import annotations


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
