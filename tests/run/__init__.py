"""Running a sweep: the driver end to end, faults and hangs, scheduling, progress, `--until-decided`."""
