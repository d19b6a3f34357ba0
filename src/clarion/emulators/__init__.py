"""Protocol-faithful push-service emulators: real servers on loopback for tests and dev."""
