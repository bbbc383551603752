"""Sources and sinks against real servers (Tansu, moto_server) and their units."""
