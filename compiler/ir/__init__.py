"""reidc's graph IR: immutable nodes with a closed op set, held in a networkx graph."""
from .graph import Graph
from .node import Node, const
from reidc.compiler.base.modes import CODES, MODEL_MODES, Modality, Placement, RunMode
from .ops import Op
from .verify import IRError, verify
from .dump import dump

__all__ = ["Graph", "Node", "Op", "IRError", "verify", "dump", "const", "Modality", "RunMode", "Placement",
           "CODES", "MODEL_MODES"]
