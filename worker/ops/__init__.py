"""What on-call reads (status, check) and what a pass leaves behind for them (history in the
database, metrics for Prometheus)."""
