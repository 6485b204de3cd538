"""`audiointerp serve`: a local page and JSON API to listen to explanations."""

from audiointerp.app.server import Limits, create_app, load_models, serve

__all__ = ["Limits", "create_app", "load_models", "serve"]
