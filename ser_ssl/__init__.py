"""ser-ssl: self-supervised contrastive learning of sound-event representations."""

__version__ = "0.1.0"
