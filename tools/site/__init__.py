"""The website: Markdown pages rendered with jinja2 from the catalogue into ``site/_generated/`` (git-ignored), then
built by mkdocs-material into a static folder (``python -m tools site``).

Modules: ``text`` (escaping paper text for Markdown + HTML), ``model`` (the catalogue indexed by stage, axis, cell,
technique), ``refimpls`` (the reference implementations a paper links), ``plots`` (SVG figures), ``explorer`` (the
explorer's JSON), ``generate`` (the docs tree and mkdocs.yml), ``build`` (mkdocs build and the local server).
"""
