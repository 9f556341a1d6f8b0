"""The command line: the parser and dispatch (`main`), each subcommand (`commands`), the run and
predict driver (`runner`), its progress display (`progress`) and its one-line errors (`errors`).

It sits at the end of the pipeline and may use every stage; no stage imports it.
"""
from .main import main

__all__ = ["main"]
