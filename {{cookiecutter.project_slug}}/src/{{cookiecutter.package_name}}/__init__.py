"""The {{ cookiecutter.project_slug }} service: see README.md."""
