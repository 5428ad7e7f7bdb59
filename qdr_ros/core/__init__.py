"""Code shared by nodes, tools and the trainer: frames, models, percentiles, atomic files, figures; no ROS, no torch."""
