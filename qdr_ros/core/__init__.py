"""Frame and model code shared by nodes, tools and the trainer: no ROS, no torch."""
