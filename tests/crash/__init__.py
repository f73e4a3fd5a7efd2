"""Process-level crash tests: real worker processes killed with SIGKILL at aimed moments."""
