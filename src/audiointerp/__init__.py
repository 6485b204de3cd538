"""audiointerp: explain audio classifiers with sound."""

__version__ = "0.1.0"
