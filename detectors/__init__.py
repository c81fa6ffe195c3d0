"""YOLO detector wrapper, synthetic scenes, training/export, demo clip, tracker glue, zones and rules."""
