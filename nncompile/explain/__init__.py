"""The derivation for people: formulas, the scalar view, printers, renderers, the graph view.

`assemble` turns derive's records into the equations (`equations`) that `formulas.Formulas`
collects (`prog.formulas`); `render` writes them as text, unicode, LaTeX or Markdown with
the SymPy printers in `printers`; `scalar` expands every weight's gradient for small
networks; `graph` shows the explicit forward + backward graph as a table or DOT.
"""
