"""Wire format shared by client and service: pure functions, no I/O."""
