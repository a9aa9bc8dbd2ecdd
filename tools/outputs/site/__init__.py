"""The website: Markdown pages rendered with jinja2 from the catalogue into ``site/_generated/`` (git-ignored), then
built by mkdocs-material into a static folder (``python -m tools site``).

Modules: ``text`` (escaping paper text for Markdown + HTML), ``model`` (the catalogue indexed by stage, axis, cell,
technique; related papers), ``refimpls`` (the reference implementations a paper links; benchmark result files),
``measured`` (claims a GPU benchmark measured, from benchmarks/reproductions.yaml), ``results`` (claims grouped by a
comparable setting), ``plots`` (SVG figures), ``explorer`` (the explorer's JSON and the catalogue's CSV / JSON
exports), ``generate`` (the docs tree and mkdocs.yml), ``build`` (mkdocs build, the local server and its rebuilds).
"""
