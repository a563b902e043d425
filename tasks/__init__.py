"""The built-in task cards (the YAML files beside this one), installed as the data package
`xbench._cards` so that an installed xbench finds them with importlib.resources (pyproject.toml,
package data). Nothing here is code."""
