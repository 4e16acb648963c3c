"""Running a plan on Ray: the driver, the scheduler, trial actors, recording finished stages, progress, estimates, runs look by look."""
