"""Results -> Markdown, HTML and figures."""
