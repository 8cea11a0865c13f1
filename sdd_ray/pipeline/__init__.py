"""The whole run as one Ray job: config, content-keyed stage cache, plan, scheduler, report (`sdd-ray run`)."""
