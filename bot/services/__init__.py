"""The use cases: rotations, alerts, schedules, health, timers, readiness review, emergency
re-rotation, and the ports (Protocols) they need from adapters and storage."""
