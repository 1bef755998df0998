"""Command-line interface: ``xrad VERB ...``; one module per verb, imported only when used."""
