"""Developer tools run from the project root (`python -m scripts.<name>`), not shipped in the package."""
