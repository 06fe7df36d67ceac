"""Work on files, not on a live stream: evaluation, calibration, synthetic scenes, produce."""
