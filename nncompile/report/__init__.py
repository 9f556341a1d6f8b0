"""`nncompile report`: one self-contained HTML page with the network, its derivation beside
the generated code, and the training run.

`page` assembles it (`report_html`, `derivation_html`, `write`); `network`, `layout` and
`diagram` draw the network; `codemap` and `derivation` put each formula beside its code;
`charts`, `heatmap`, `confusion` and `runview` show the run; `templating` renders
``templates/report/``.  This module imports none of them, so that showing a training result
(`runview`) never loads SymPy.
"""
