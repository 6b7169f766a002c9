"""Traffic: detection of vehicles and pedestrians in road-camera frames."""
