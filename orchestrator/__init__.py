"""consistency-guard: PostgreSQL-enforced consistency for voice-agent bookings."""

__version__ = "0.1.0"
