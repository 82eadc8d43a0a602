"""consistency-guard: PostgreSQL-enforced consistency for voice-agent bookings."""
