"""The event producer: realistic viewing sessions written to the publisher."""
