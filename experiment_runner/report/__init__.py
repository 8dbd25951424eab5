"""The HTML report: one self-contained page for an experiment, or two compared.

Owns highlighting (spans to marked-up HTML, pure), the page builder and its Jinja2 template (imported
only when a report is written). It may import `results`, `evaluation` (part targets), `store` and
`errors`.
"""
