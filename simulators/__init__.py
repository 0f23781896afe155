"""Device simulators: the demo community generator and the fleet runner.

They behave like devices, so they import `devices` only, never `gateway` or `rules`.
"""
