"""gridgate: street cameras and IoT sensors to dispatched grid tickets."""

__version__ = "0.1.0"
