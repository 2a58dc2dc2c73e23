"""What both Ray layers (`sweeps/`, `ray_jobs/`) share: joining or starting Ray, Ctrl-C and
the storage guard around a run, and experiment tracking. Neither layer imports the other;
the core (`sentisweep/`) never imports Ray."""
